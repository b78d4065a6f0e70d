"""The compiled CPU renderer: ``csrc/rasterize.cpp`` and ``csrc/project.cpp`` built with the system C++ compiler, called
through ctypes.

Rasterization has the same inputs, outputs and rules as ``tiles.rasterize_tiles`` (which stays as the readable
reference): tile intersection with its depth sort (tested to give ``tiles.intersections``' exact lists), SIMD
compositing and its backward all run compiled, on all cores (``torch.get_num_threads()`` threads). The projection and
its backward (``compiled_projection.py``) replace gsplat's PyTorch projection and SH code, which stays the reference.
Why a plain C++ library rather than numba or a torch C++ extension: no new dependency and no torch headers (it builds
in about 5 s where a torch extension takes about a minute), and the SIMD width is ours to fix; measurements in
docs/performance.md.

The library is built on first use (or ahead of time by ``python -m gslrm.render.compiled``, which ``make install``
runs) into ``$GSLRM_EXT_DIR`` (default ``~/.cache/gslrm/ext``), under a name that hashes the source, the flags and
the CPU model, written atomically so that concurrent processes (DDP ranks, loader workers) never load a half-written
file. Where it cannot be built (no compiler), ``available()`` is False with the reason and ``render()`` falls back to
the torch path with a one-line warning.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
from functools import cache
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from gslrm.files import written_atomically
from gslrm.render.projection import Splats
from gslrm.render.tiles import GSPLAT_MAX_ALPHA

__all__ = [
    "available",
    "unavailable_reason",
    "rasterize_compiled",
    "intersect_tiles",
    "library_path",
    "build",
    "library",
    "simd_lanes",
    "pointer",
    "dtype_suffix",
]

log = logging.getLogger(__name__)

SOURCES = [Path(__file__).with_name("csrc") / name for name in ("rasterize.cpp", "project.cpp")]
# -march=native: the library is cached per CPU model, and the SIMD width follows the CPU (AVX-512, AVX2, SSE); no
# -ffast-math (NaN and the skip/stop comparisons must behave as in the reference). GSLRM_SIMD=scalar builds the scalar
# fallback (one lane) instead, for comparison.
FLAGS = [
    "-O3",
    "-march=native",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fopenmp",
    "-std=c++20",
    "-shared",
    "-fPIC",
    "-pthread",
]
ABI_VERSION = 4
MAX_TILE, MAX_CHANNELS = 32, 8
_POINTER = ctypes.c_void_p
_INT, _INT64, _DOUBLE = ctypes.c_int, ctypes.c_int64, ctypes.c_double


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _flags() -> list[str]:
    return FLAGS + (["-DGSLRM_SCALAR"] if os.environ.get("GSLRM_SIMD") == "scalar" else [])


def library_path() -> Path:
    base = Path(os.environ.get("GSLRM_EXT_DIR", Path.home() / ".cache" / "gslrm" / "ext"))
    sources = b"".join(source.read_bytes() for source in SOURCES)
    key = hashlib.sha256(
        sources + " ".join(_flags()).encode() + _cpu_model().encode() + platform.machine().encode()
    ).hexdigest()[:16]
    return base / f"libgslrm_cpu_{key}.so"


def build(force: bool = False) -> Path:
    """Compile the library if it is not cached yet; returns its path. Raises RuntimeError with the reason."""
    target = library_path()
    if target.exists() and not force:
        return target
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler found (install g++ or set CXX)")
    with written_atomically(target) as partial:  # another process sees no library or the whole one
        command = [compiler, *_flags(), *map(str, SOURCES), "-o", str(partial)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            names = " ".join(source.name for source in SOURCES)
            raise RuntimeError(f"{compiler} failed on {names}: {result.stderr.strip().splitlines()[-1:]}")
    return target


def _declare(library: ctypes.CDLL) -> ctypes.CDLL:
    common = [_POINTER] * 7 + [_INT] * 7 + [_DOUBLE, _INT]
    for suffix in ("f32", "f64"):
        forward = getattr(library, f"gslrm_rasterize_forward_{suffix}")
        forward.argtypes, forward.restype = common + [_INT64] + [_POINTER] * 4, _INT
        backward = getattr(library, f"gslrm_rasterize_backward_{suffix}")
        backward.argtypes, backward.restype = common + [_POINTER] * 5 + [_INT64, _POINTER], _INT
        intersect = getattr(library, f"gslrm_intersect_tiles_{suffix}")
        intersect.argtypes, intersect.restype = [_POINTER] * 3 + [_INT, _INT64] + [_INT] * 4 + [_POINTER] * 4, None
        settings = [_INT, _INT, _INT64, _INT, _INT, _DOUBLE, _DOUBLE, _DOUBLE, _INT]
        project = getattr(library, f"gslrm_project_forward_{suffix}")
        project.argtypes, project.restype = [_POINTER] * 7 + settings + [_POINTER] * 5, None
        project_back = getattr(library, f"gslrm_project_backward_{suffix}")
        project_back.argtypes, project_back.restype = [_POINTER] * 7 + settings + [_POINTER] * 7, None
    return library


@cache
def _library() -> tuple[ctypes.CDLL | None, str]:
    try:
        library = ctypes.CDLL(str(build()))
        if library.gslrm_rasterize_abi_version() != ABI_VERSION:
            return None, "the cached library is of another version (remove it to rebuild)"
        return _declare(library), ""
    except (RuntimeError, OSError) as error:
        return None, str(error)


def available() -> bool:
    return _library()[0] is not None


def unavailable_reason() -> str:
    return _library()[1]


def library() -> ctypes.CDLL:
    """The loaded library (raises with the reason where it is unavailable)."""
    loaded, reason = _library()
    if loaded is None:
        raise RuntimeError(f"the compiled CPU renderer is unavailable: {reason}")
    return loaded


def simd_lanes() -> int:
    """Floats per SIMD vector the compositing runs on (16: AVX-512, 8: AVX2, 4: SSE, 1: the scalar build)."""
    return int(library().gslrm_rasterize_lanes())


def pointer(t: Tensor) -> int:
    return t.data_ptr()


def dtype_suffix(dtype: torch.dtype) -> str:
    return "f64" if dtype == torch.float64 else "f32"


def intersect_tiles(splats: Splats, tile_size: int, tiles_x: int, tiles_y: int) -> tuple[Tensor, Tensor, Tensor]:
    """``tiles.intersections`` compiled: flat splat ids per tile in depth order, the per-tile starts and counts."""
    library, _ = _library()
    images, n = splats.depths.shape
    means2d = splats.means2d.detach().contiguous()
    radii = splats.radii.to(torch.int32).contiguous()
    depths = splats.depths.detach().to(means2d.dtype).contiguous()
    counts = torch.zeros(images * tiles_x * tiles_y, dtype=torch.int64)
    rects = torch.empty(images * n, 4, dtype=torch.int32)  # each splat's tile rectangle, from the first call
    call = getattr(library, f"gslrm_intersect_tiles_{dtype_suffix(means2d.dtype)}")
    arguments = (pointer(means2d), pointer(radii), pointer(depths), images, n, tile_size, tiles_x, tiles_y)
    call(*arguments, torch.get_num_threads(), pointer(rects), pointer(counts), None, None)
    starts = torch.cumsum(counts, 0) - counts
    ids = torch.empty(int(counts.sum()), dtype=torch.int64)
    call(*arguments, torch.get_num_threads(), pointer(rects), None, pointer(starts), pointer(ids))
    return ids, starts, counts


class _Composite(torch.autograd.Function):
    """Compiled compositing: per-image accumulated features and final transmittance, with gsplat's backward."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, ids, starts, counts, layout, max_alpha):
        library, _ = _library()
        images, height, width, tile_size, tiles_x, tiles_y = layout
        channels, dtype = features.shape[-1], features.dtype
        suffix = dtype_suffix(dtype)
        accumulated = torch.empty(images, height, width, channels, dtype=dtype)
        transmittance = torch.empty(images, height, width, dtype=dtype)
        last = torch.empty(images, height, width, dtype=torch.int32)
        half = torch.empty(len(means2d), dtype=dtype)  # each splat's reachable half-height, reused by the backward
        inputs = [t.contiguous() for t in (means2d, conics, opacities, features)]
        status = getattr(library, f"gslrm_rasterize_forward_{suffix}")(
            *map(pointer, (*inputs, ids, starts, counts)), images, width, height, tile_size, tiles_x, tiles_y,
            channels, max_alpha, torch.get_num_threads(), len(means2d),
            *map(pointer, (accumulated, transmittance, last, half)),
        )  # fmt: skip
        if status != 0:
            raise ValueError(f"compiled rasterizer: unsupported tile_size {tile_size} or {channels} channels")
        ctx.save_for_backward(*inputs, ids, starts, counts, transmittance, last, half)
        ctx.layout, ctx.max_alpha = layout, max_alpha
        ctx.mark_non_differentiable(last)
        return accumulated, transmittance

    @staticmethod
    def backward(ctx, grad_accumulated, grad_transmittance):
        means2d, conics, opacities, features, ids, starts, counts, transmittance, last, half = ctx.saved_tensors
        library, _ = _library()
        images, height, width, tile_size, tiles_x, tiles_y = ctx.layout
        channels, dtype = features.shape[-1], features.dtype
        grad_accumulated = (
            torch.zeros_like(transmittance[..., None].expand(-1, -1, -1, channels))
            if grad_accumulated is None
            else grad_accumulated.contiguous()
        )
        grad_transmittance = (
            torch.zeros_like(transmittance) if grad_transmittance is None else grad_transmittance.contiguous()
        )
        per_splat = torch.empty(len(means2d), 6 + channels, dtype=dtype)
        getattr(library, f"gslrm_rasterize_backward_{dtype_suffix(dtype)}")(
            *map(pointer, (means2d, conics, opacities, features, ids, starts, counts)), images, width, height,
            tile_size, tiles_x, tiles_y, channels, ctx.max_alpha, torch.get_num_threads(),
            *map(pointer, (transmittance, last, half, grad_accumulated, grad_transmittance)), len(means2d) // images,
            pointer(per_splat),
        )  # fmt: skip
        grad_means2d, grad_conics, grad_opacities, grad_features = per_splat.split([2, 3, 1, channels], dim=-1)
        return grad_means2d, grad_conics, grad_opacities[:, 0], grad_features, None, None, None, None, None


def rasterize_compiled(
    splats: Splats,
    width: int,
    height: int,
    background: Float[Tensor, "i c"],
    tile_size: int = 8,
    max_alpha: float = GSPLAT_MAX_ALPHA,
) -> tuple[Float[Tensor, "i h w c"], Float[Tensor, "i h w 1"]]:
    """``tiles.rasterize_tiles`` compiled: ``features`` blended over ``background`` and the accumulated alpha."""
    if splats.features.device.type != "cpu":
        raise ValueError("the compiled rasterizer runs on CPU tensors (CUDA renders with gsplat)")
    images, n, channels = splats.features.shape
    if tile_size > MAX_TILE or channels > MAX_CHANNELS:
        raise ValueError(f"compiled rasterizer: tile_size <= {MAX_TILE} and <= {MAX_CHANNELS} channels")
    tiles_x, tiles_y = -(-width // tile_size), -(-height // tile_size)
    ids, starts, per_tile = intersect_tiles(splats, tile_size, tiles_x, tiles_y)
    accumulated, transmittance = _Composite.apply(
        splats.means2d.reshape(images * n, 2), splats.conics.reshape(images * n, 3),
        splats.opacities.reshape(images * n), splats.features.reshape(images * n, channels),
        ids, starts, per_tile,
        (images, height, width, tile_size, tiles_x, tiles_y), float(max_alpha),
    )  # fmt: skip
    transmittance = transmittance[..., None]
    return accumulated + background[:, None, None, :] * transmittance, 1.0 - transmittance


if __name__ == "__main__":  # `python -m gslrm.render.compiled`: build ahead of time (make install runs it)
    try:
        print(f"compiled rasterizer: {build()}")
    except RuntimeError as error:
        print(f"compiled rasterizer not built ({error}); rendering on CPU will use the torch path")
