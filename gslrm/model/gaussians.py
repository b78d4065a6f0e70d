"""``Gaussians``: the one typed contract between the model and the renderer, plus FaceLift's activations (``to_gs``),
export pruning and ``.ply`` I/O in the standard 3D Gaussian Splatting layout."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["Gaussians", "to_gs", "raw_channels", "SH_C0", "save_ply", "load_ply", "prune"]

SH_C0 = 0.28209479177387814
SCALE_BIAS, SCALE_MAX_LOG = 2.3, -1.20  # scale = exp(min(x - 2.3, -1.2)): 0.1003 at x = 0, at most 0.3012
OPACITY_BIAS = 2.0  # opacity = sigmoid(x - 2): 0.1192 at x = 0


@dataclass
class Gaussians:
    """A batch of 3D Gaussians (activated values). N counts the 2 free token Gaussians first, then the pixels."""

    means: Float[Tensor, "b n 3"]
    features: Float[Tensor, "b n k 3"]  # SH coefficients, k = (degree + 1)^2, coefficient-major, RGB last
    scales: Float[Tensor, "b n 3"]
    quats: Float[Tensor, "b n 4"]  # unit quaternions (w, x, y, z)
    opacities: Float[Tensor, "b n"]

    @property
    def sh_degree(self) -> int:
        return int(round(self.features.shape[-2] ** 0.5)) - 1

    @property
    def colors(self) -> Float[Tensor, "b n 3"]:
        """View-independent colour (degree-0 term), as the rasterizers compute it: C0 * f_dc + 0.5, clamped at 0."""
        return (SH_C0 * self.features[..., 0, :] + 0.5).clamp_min(0.0)

    @classmethod
    def from_colors(cls, means: Tensor, scales: Tensor, quats: Tensor, opacities: Tensor, colors: Tensor) -> Gaussians:
        """Degree-0 Gaussians whose rendered colour is ``colors`` (the inverse of :attr:`colors` where it is not
        clamped): how a stored sequence frame becomes renderable again."""
        return cls(means, ((colors - 0.5) / SH_C0)[..., None, :], scales, quats, opacities)

    def map(self, function) -> Gaussians:
        return Gaussians(**{f.name: function(getattr(self, f.name)) for f in fields(self)})

    def detach(self) -> Gaussians:
        return self.map(lambda t: t.detach())

    def float(self) -> Gaussians:
        return self.map(lambda t: t.float())

    def __getitem__(self, index) -> Gaussians:
        """Select samples of the batch (keeps the batch dim for an int index)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return self.map(lambda t: t[index])

    def usage(self, threshold: float = 0.05) -> Tensor:
        """Fraction of Gaussians with opacity above ``threshold`` (FaceLift's ``gaussians_usage``)."""
        return (self.opacities > threshold).float().mean()


def raw_channels(sh_degree: int = 0) -> int:
    """Channels per Gaussian before activation: xyz 3 | SH (d+1)^2*3 | scale 3 | quat 4 | opacity 1 (14 at d=0)."""
    return 3 + (sh_degree + 1) ** 2 * 3 + 3 + 4 + 1


def to_gs(
    raw: Float[Tensor, "b n c"], means: Float[Tensor, "b n 3"] | None = None, sh_degree: int = 0, clip_xyz: bool = False
) -> Gaussians:
    """FaceLift's activations of the raw head output.

    ``means`` replaces the raw xyz channels (hard pixel alignment computes them from the rays). ``clip_xyz`` really
    clamps the means to [-1, 1]; in FaceLift the flag never took effect (its ``config.inference`` dict is truthy),
    so the faithful default is off.
    """
    k = (sh_degree + 1) ** 2
    xyz, features, scales, quats, opacity = raw.split([3, k * 3, 3, 4, 1], dim=-1)
    means = xyz if means is None else means
    if clip_xyz:
        means = means.clamp(-1.0, 1.0)
    return Gaussians(
        means=means,
        features=features.reshape(*features.shape[:-1], k, 3),
        scales=torch.exp((scales - SCALE_BIAS).clamp(max=SCALE_MAX_LOG)),
        quats=torch.nn.functional.normalize(quats, dim=-1),
        opacities=torch.sigmoid(opacity[..., 0] - OPACITY_BIAS),
    )


def prune(
    gaussians: Gaussians,
    opacity_threshold: float = 0.02,
    crop_box: tuple[tuple[float, float], tuple[float, float], tuple[float, float]] | None = ((-0.91, 0.91),) * 3,
) -> Gaussians:
    """Export filter of one sample (FaceLift's eval/visual settings): drop opacity <= threshold, keep the crop box."""
    if gaussians.means.shape[0] != 1:
        raise ValueError("prune works on one sample at a time (gaussians[i])")
    keep = gaussians.opacities[0] > opacity_threshold
    if crop_box is not None:
        for axis, (low, high) in enumerate(crop_box):
            keep &= (gaussians.means[0, :, axis] >= low) & (gaussians.means[0, :, axis] <= high)
    return gaussians.map(lambda t: t[:, keep])


# -- .ply in the layout of the 3D Gaussian Splatting reference code (opened by SuperSplat and the common viewers)


def _ply_fields(rest: int) -> list[str]:
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(rest)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


def save_ply(path: Path | str, gaussians: Gaussians) -> None:
    """Write one sample. f_rest is zero-padded to SH degree 3 (45 values); opacity as logit, scale as log."""
    if gaussians.means.shape[0] != 1:
        raise ValueError("save_ply writes one sample (gaussians[i])")
    g = gaussians.detach().float().map(lambda t: t[0].cpu())
    n, k = g.features.shape[0], g.features.shape[1]
    rest = torch.zeros(n, 3, 15)
    rest[:, :, : k - 1] = g.features[:, 1:, :].transpose(1, 2)  # channel-major, as the reference layout
    opacity = g.opacities.clamp(1e-7, 1 - 1e-7)
    columns = [
        g.means,
        torch.zeros(n, 3),
        g.features[:, 0, :],
        rest.reshape(n, 45),
        torch.log(opacity / (1 - opacity))[:, None],
        torch.log(g.scales.clamp_min(1e-12)),
        g.quats,
    ]
    data = torch.cat(columns, dim=1).numpy().astype("<f4")
    names = _ply_fields(45)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {name}" for name in names] + ["end_header"]
    with open(path, "wb") as handle:
        handle.write(("\n".join(header) + "\n").encode("ascii"))
        handle.write(data.tobytes())


def load_ply(path: Path | str, sh_degree: int = 0) -> Gaussians:
    """Read a 3DGS ``.ply`` (binary little endian, float properties) back into a one-sample batch."""
    path = Path(path)
    with open(path, "rb") as handle:
        names, count = [], 0
        if handle.readline().strip() != b"ply":
            raise ValueError(f"{path}: not a PLY file")
        while True:
            line = handle.readline()
            if not line:
                raise ValueError(f"{path}: truncated header")
            words = line.decode("ascii").split()
            if words[:2] == ["format", "ascii"]:
                raise ValueError(f"{path}: ASCII PLY is not supported; expected binary_little_endian")
            if words[:2] == ["element", "vertex"]:
                count = int(words[2])
            elif words[:1] == ["property"]:
                if words[1] != "float":
                    raise ValueError(f"{path}: property {words[-1]}: expected float, got {words[1]}")
                names.append(words[2])
            elif words[:1] == ["end_header"]:
                break
        data = np.frombuffer(handle.read(count * len(names) * 4), dtype="<f4").reshape(count, len(names))
    column = {name: torch.from_numpy(data[:, i].copy()) for i, name in enumerate(names)}
    stack = lambda keys: torch.stack([column[key] for key in keys], dim=-1)  # noqa: E731
    k = (sh_degree + 1) ** 2
    rest_count = sum(name.startswith("f_rest_") for name in names) // 3
    features = torch.zeros(count, k, 3)
    features[:, 0] = stack(["f_dc_0", "f_dc_1", "f_dc_2"])
    if k > 1:
        rest = stack([f"f_rest_{i}" for i in range(rest_count * 3)]).reshape(count, 3, rest_count)
        features[:, 1:] = rest[:, :, : k - 1].transpose(1, 2)
    return Gaussians(
        means=stack(["x", "y", "z"])[None],
        features=features[None],
        scales=torch.exp(stack(["scale_0", "scale_1", "scale_2"]))[None],
        quats=torch.nn.functional.normalize(stack(["rot_0", "rot_1", "rot_2", "rot_3"]), dim=-1)[None],
        opacities=torch.sigmoid(column["opacity"])[None],
    )
