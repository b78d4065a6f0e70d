import math

import torch

from gslrm.cameras import look_at_c2w, pixel_rays, posed_input, project_points, turntable_cameras


def test_turntable_matches_facelift_convention():
    c2w, k = turntable_cameras(4, resolution=512, elevation_deg=0.0)
    # azimuth 270 deg first: the "front" camera at (0, -2.7, 0), looking along +y (OpenCV z forward)
    assert torch.allclose(c2w[0, :3, 3], torch.tensor([0.0, -2.7, 0.0]), atol=1e-6)
    assert torch.allclose(c2w[0, :3, 2], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    # y axis points down (world -Z), x right: forward x up
    assert torch.allclose(c2w[0, :3, 1], torch.tensor([0.0, 0.0, -1.0]), atol=1e-6)
    assert torch.allclose(c2w[0, :3, 0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)
    # FaceLift's sample data: fx = 512 / (2 tan 25 deg) = 548.99 px, i.e. HFOV 50 deg
    assert abs(k[0, 0].item() - 548.99) < 0.01 and k[0, 2].item() == 256.0
    # elevation 20 deg: z = 2.7 sin 20 = 0.923 (FaceLift's training ring)
    c2w, _ = turntable_cameras(32, resolution=512, elevation_deg=20.0)
    assert torch.allclose(c2w[:, 2, 3], torch.full((32,), 0.9235), atol=1e-4)
    assert torch.allclose(c2w[:, :3, 3].norm(dim=-1), torch.full((32,), 2.7), atol=1e-5)


def test_rays_through_pixel_centres():
    c2w = torch.eye(4)
    k = torch.tensor([100.0, 50.0, 2.0, 1.0])  # 4x2 image, principal point on a pixel corner
    ray_o, ray_d = pixel_rays(c2w, k, height=2, width=4)
    assert ray_o.shape == (3, 2, 4) and ray_d.shape == (3, 2, 4)
    # pixel (row 0, col 3): centre (3.5, 0.5) -> camera direction ((3.5-2)/100, (0.5-1)/50, 1)
    expected = torch.tensor([0.015, -0.01, 1.0])
    assert torch.allclose(ray_d[:, 0, 3], expected / expected.norm(), atol=1e-7)
    assert torch.allclose(ray_d.norm(dim=0), torch.ones(2, 4), atol=1e-6)


def test_rays_reproject_to_their_pixel_centres():
    c2w, k = turntable_cameras(3, resolution=16, elevation_deg=30.0)
    ray_o, ray_d = pixel_rays(c2w, k, 16, 16)
    points = (ray_o + 1.7 * ray_d).flatten(2).transpose(1, 2)  # [3, 256, 3]
    uv, z = project_points(points, c2w, k)
    ys, xs = torch.meshgrid(torch.arange(16) + 0.5, torch.arange(16) + 0.5, indexing="ij")
    assert torch.allclose(uv[..., 0], xs.flatten().expand(3, -1), atol=1e-4)
    assert torch.allclose(uv[..., 1], ys.flatten().expand(3, -1), atol=1e-4)
    assert (z > 0).all()


def test_custom_plucker_known_answer():
    rgb = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1)
    ray_o = torch.tensor([0.0, -2.0, 1.0]).view(3, 1, 1)
    ray_d = torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1)
    out = posed_input(rgb, ray_o, ray_d)[:, 0, 0]
    # o.d = -2 -> nearest point to the origin on the ray = o + 2 d = (0, 0, 1)
    assert torch.allclose(out, torch.tensor([-1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]))


def test_look_at_is_rotation_looking_at_target():
    position = torch.tensor([[1.0, 2.0, 0.5]])
    c2w = look_at_c2w(position, torch.zeros(1, 3))[0]
    rotation = c2w[:3, :3]
    assert torch.allclose(rotation.T @ rotation, torch.eye(3), atol=1e-6)
    assert abs(torch.det(rotation).item() - 1.0) < 1e-6
    assert torch.allclose(c2w[:3, 2], -position[0] / position.norm(), atol=1e-6)
    assert math.isclose(c2w[3, 3].item(), 1.0)
