"""How a frame's Gaussians are laid out in the sequence store: ``predict.encoding=compact`` (default) or ``float32``.

``float32`` stores the world-frame values as they are: 56 bytes a Gaussian, about 90 KB a frame for the default
model's 1,600 kept Gaussians at 64 px. ``compact`` stores 23 bytes a Gaussian, each field quantized within a bound
that rendering cannot see, and decodes with numpy alone (the formulas are also in the store's attrs and in
docs/predict.md):

=================  ===============================  ===========================================================
array              stored                           decoded (and the largest error)
=================  ===============================  ===========================================================
means_u16 [3]      uint16 over the frame's box      means_lo + means_u16 * (means_hi - means_lo) / 65535
                                                    (half a step: box / 131070, 0.002 mm for a 300 mm box)
log_scales [3]     float16 of log(scale)            exp(log_scales) (relative 0.1 % for scales within
                                                    e^4 of one world unit: float16's half step on the log)
rotations_i8 [4]   int8 of q * 127, w >= 0          normalize(rotations_i8 / 127) (q and -q: the same rotation;
                                                    under 1 degree)
opacities_u8       uint8 of opacity * 255           opacities_u8 / 255 (1/510)
colors [3]         float16 RGB                      as stored (relative 2^-11; not clipped: RGB may pass 1)
=================  ===============================  ===========================================================

The per-frame table (frames.csv) and the .ply files are computed from the unquantized values.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

__all__ = ["Encoding", "array_layout", "encode", "decode", "DECODING"]


class Encoding(StrEnum):
    compact = "compact"
    float32 = "float32"


# name -> (trailing shape per Gaussian, dtype); ``per_frame`` arrays have no Gaussian axis
_GAUSSIANS = {
    Encoding.float32: {
        "means": ((3,), np.float32),
        "scales": ((3,), np.float32),
        "rotations": ((4,), np.float32),
        "opacities": ((), np.float32),
        "colors": ((3,), np.float32),
    },
    Encoding.compact: {
        "means_u16": ((3,), np.uint16),
        "log_scales": ((3,), np.float16),
        "rotations_i8": ((4,), np.int8),
        "opacities_u8": ((), np.uint8),
        "colors": ((3,), np.float16),
    },
}
_PER_FRAME = {Encoding.float32: {}, Encoding.compact: {"means_lo": (3,), "means_hi": (3,)}}  # float64

DECODING = {
    Encoding.float32: "means, scales, rotations (w, x, y, z), opacities, colors: as stored (float32)",
    Encoding.compact: (
        "means = means_lo + means_u16 * (means_hi - means_lo) / 65535; scales = exp(log_scales); "
        "rotations = rotations_i8 / 127, normalized (w, x, y, z); opacities = opacities_u8 / 255; colors as stored"
    ),
}
_U16 = 65535.0


def array_layout(encoding: Encoding) -> tuple[dict, dict]:
    """(Gaussian arrays: name -> (trailing shape, dtype), per-frame float64 arrays: name -> shape)."""
    return _GAUSSIANS[Encoding(encoding)], _PER_FRAME[Encoding(encoding)]


def encode(encoding: Encoding, means, scales, rotations, opacities, colors) -> dict[str, np.ndarray]:
    """One frame's kept Gaussians (float arrays, world frame) as the store's arrays for ``encoding``."""
    if Encoding(encoding) is Encoding.float32:
        fields = {"means": means, "scales": scales, "rotations": rotations, "opacities": opacities, "colors": colors}
        return {name: np.asarray(value, np.float32) for name, value in fields.items()}
    means = np.asarray(means, np.float64)
    lo = means.min(0) if len(means) else np.zeros(3)
    hi = means.max(0) if len(means) else np.zeros(3)
    span = np.where(hi > lo, hi - lo, 1.0)
    rotations = np.asarray(rotations, np.float64)
    rotations = rotations / np.linalg.norm(rotations, axis=-1, keepdims=True).clip(1e-12)
    rotations = np.where(rotations[:, :1] < 0, -rotations, rotations)  # q and -q: one rotation; w >= 0
    tiny = np.finfo(np.float16).tiny  # log of a zero scale: float16's smallest normal, not -inf
    return {
        "means_u16": np.rint((means - lo) / span * _U16).clip(0, _U16).astype(np.uint16),
        "means_lo": lo,
        "means_hi": hi,
        "log_scales": np.log(np.asarray(scales, np.float64).clip(tiny)).astype(np.float16),
        "rotations_i8": np.rint(rotations * 127).astype(np.int8),
        "opacities_u8": np.rint(np.asarray(opacities, np.float64).clip(0, 1) * 255).astype(np.uint8),
        "colors": np.asarray(colors, np.float16),
    }


def decode(encoding: Encoding, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The store's arrays of one frame (its kept slots, per-frame arrays included) as float world-frame values."""
    if Encoding(encoding) is Encoding.float32:
        return {name: arrays[name] for name in ("means", "scales", "rotations", "opacities", "colors")}
    lo, hi = arrays["means_lo"], arrays["means_hi"]
    rotations = arrays["rotations_i8"].astype(np.float32) / 127
    return {
        "means": (lo + arrays["means_u16"] * ((hi - lo) / _U16)).astype(np.float32),
        "scales": np.exp(arrays["log_scales"].astype(np.float32)),
        "rotations": rotations / np.linalg.norm(rotations, axis=-1, keepdims=True).clip(1e-12),
        "opacities": arrays["opacities_u8"].astype(np.float32) / 255,
        "colors": arrays["colors"].astype(np.float32),
    }
