import math

import numpy as np
import pytest
import torch

from gslrm.model.gaussians import Gaussians, load_ply, prune, raw_channels, save_ply, to_gs


def test_activations_known_answers():
    raw = torch.zeros(1, 2, 14)
    raw[0, 1, 6:9] = 5.0  # big raw scale: clamped at exp(-1.2)
    raw[0, 1, 9:13] = torch.tensor([2.0, 0.0, 0.0, 0.0])
    raw[0, 1, 3:6] = torch.tensor([1.0, -1.0, -5.0])
    g = to_gs(raw)
    assert torch.allclose(g.scales[0, 0], torch.full((3,), math.exp(-2.3)), atol=1e-7)  # 0.1003
    assert abs(g.scales[0, 0, 0].item() - 0.1003) < 1e-4
    assert torch.allclose(g.scales[0, 1], torch.full((3,), math.exp(-1.2)))  # 0.3012
    assert abs(g.opacities[0, 0].item() - 0.1192) < 1e-4
    assert torch.allclose(g.quats[0, 1], torch.tensor([1.0, 0.0, 0.0, 0.0]))
    # colour = 0.28209479 f + 0.5, clamped at 0
    assert torch.allclose(g.colors[0, 1], torch.tensor([0.28209479 + 0.5, 0.5 - 0.28209479, 0.0]))
    assert torch.allclose(g.colors[0, 0], torch.full((3,), 0.5))
    assert g.sh_degree == 0 and raw_channels(0) == 14 and raw_channels(1) == 23


def test_pixel_means_replace_raw_xyz_and_clip_really_clips():
    raw = torch.zeros(1, 3, 14)
    means = torch.tensor([[[0.5, -2.0, 3.0], [0.0, 0.0, 0.0], [1.5, 1.0, -1.5]]])
    assert torch.equal(to_gs(raw, means=means).means, means)
    clipped = to_gs(raw, means=means, clip_xyz=True).means
    assert torch.equal(clipped, means.clamp(-1, 1))


def random_gaussians(n, degree=0):
    k = (degree + 1) ** 2
    return Gaussians(
        means=torch.randn(1, n, 3),
        features=torch.randn(1, n, k, 3),
        scales=torch.rand(1, n, 3) * 0.2 + 0.01,
        quats=torch.nn.functional.normalize(torch.randn(1, n, 4), dim=-1),
        opacities=torch.rand(1, n) * 0.98 + 0.01,
    )


@pytest.mark.parametrize("degree", [0, 1])
def test_ply_round_trip(tmp_path, degree):
    g = random_gaussians(50, degree)
    save_ply(tmp_path / "g.ply", g)
    header = (tmp_path / "g.ply").read_bytes().split(b"end_header")[0].decode()
    for name in ["x", "f_dc_0", "f_rest_44", "opacity", "scale_2", "rot_3"]:
        assert f"property float {name}\n" in header
    back = load_ply(tmp_path / "g.ply", sh_degree=degree)
    for field in ["means", "features", "scales", "quats", "opacities"]:
        assert torch.allclose(getattr(back, field), getattr(g, field), atol=1e-5), field
    # stored as the reference layout: opacity as logit, scale as log
    data = np.frombuffer((tmp_path / "g.ply").read_bytes().split(b"end_header\n")[1], "<f4").reshape(50, -1)
    assert np.allclose(data[:, 54], torch.logit(g.opacities[0]).numpy(), atol=1e-4)
    assert np.allclose(data[:, 55:58], torch.log(g.scales[0]).numpy(), atol=1e-5)


def test_prune_by_opacity_and_box():
    g = random_gaussians(4)
    g.opacities[:] = torch.tensor([[0.01, 0.5, 0.5, 0.9]])
    g.means[:] = torch.tensor([[[0, 0, 0], [0.95, 0, 0], [0.2, -0.3, 0.9], [0, 0, -0.5]]])
    kept = prune(g, opacity_threshold=0.02)
    assert kept.means.shape == (1, 2, 3)
    assert torch.equal(kept.opacities, torch.tensor([[0.5, 0.9]]))
