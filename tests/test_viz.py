"""Pictures: the error panel's pixels (colorbar, mean line), strips, turntables and videos."""

import math

import numpy as np
import pytest
import torch

from gslrm.model.gaussians import Gaussians
from gslrm.turntable import render_turntable, write_video
from gslrm.viz import error_panel, image_row, image_rows, to_uint8


def _is_yellow(pixel):
    r, g, b = (int(c) for c in pixel)
    return r > 200 and g > 200 and b < 90


def _yellow_rows(panel):
    left, top, right, bottom = panel.colorbar_box
    column = panel.image[top - 2 : bottom + 2, left - 3]  # the line extends beyond the bar's sides
    return [top - 2 + i for i, pixel in enumerate(column) if _is_yellow(pixel)]


@pytest.mark.parametrize("error", [0.15, 0.06, 0.24])
def test_error_panel_colorbar_and_mean_line(error):
    gt = torch.zeros(3, 3, 16, 20)
    pred = torch.full_like(gt, error)  # every pixel off by `error` in every channel
    panel = error_panel(gt, pred, vmax=0.3)
    assert panel.mean_error == pytest.approx(error, abs=1e-6) and panel.max_error == pytest.approx(error, abs=1e-6)
    assert panel.psnr == pytest.approx(-10 * math.log10(error**2), abs=1e-3)  # 16.478 dB for 0.15

    left, top, right, bottom = panel.colorbar_box
    assert right - left >= 8 and bottom - top >= 100
    middle = (left + right) // 2
    r, g, b = (int(c) for c in panel.image[top + 2, middle])
    assert r > 150 and r > 3 * max(g, b), "top of the bar (0.3) is red"
    r, g, b = (int(c) for c in panel.image[bottom - 3, middle])
    assert b > 150 and b > 2 * max(r, g), "bottom of the bar (0.0) is blue"
    rows = _yellow_rows(panel)
    expected = bottom - (error / 0.3) * (bottom - top)  # the bar is linear from 0 (bottom) to vmax (top)
    assert rows and abs(np.mean(rows) - expected) <= 2.0, (rows, expected)


def test_error_panel_layout_follows_views_and_vmax():
    gt = torch.rand(5, 3, 12, 12)
    wide = error_panel(gt, gt.flip(-1), vmax=0.5)
    narrow = error_panel(gt[:2], gt[:2].flip(-1), vmax=0.5)
    assert wide.image.shape[1] > narrow.image.shape[1] and wide.image.dtype == np.uint8
    # an error above vmax pins the line at the top of the bar instead of drawing it outside
    saturated = error_panel(torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8), vmax=0.3)
    rows = _yellow_rows(saturated)
    assert rows and min(rows) <= saturated.colorbar_box[1] + 2


def test_strips_and_rows():
    images = torch.stack([torch.full((3, 4, 5), v / 4) for v in range(3)])
    strip = image_row(images)
    assert strip.shape == (4, 15, 3) and strip[0, 5, 0] == round(255 * 0.25)
    assert image_rows(images, images).shape == (8, 15, 3)
    assert to_uint8(torch.tensor([-1.0, 0.5, 2.0]).view(3, 1, 1))[0, 0].tolist() == [0, 128, 255]


def _one_gaussian(color=(1.0, 0.0, 0.0)):
    from gslrm.model.gaussians import SH_C0

    features = ((torch.tensor(color) - 0.5) / SH_C0).view(1, 1, 1, 3)
    return Gaussians(
        means=torch.zeros(1, 1, 3),
        features=features,
        scales=torch.full((1, 1, 3), 0.15),
        quats=torch.tensor([[[1.0, 0, 0, 0]]]),
        opacities=torch.full((1, 1), 0.99),
    )


def test_turntable_sees_the_centre_from_every_azimuth():
    frames = render_turntable(_one_gaussian(), num_views=6, resolution=24, elevation_deg=20.0)
    assert frames.shape == (6, 3, 24, 24)
    centre = frames[:, :, 11:13, 11:13].mean(dim=(2, 3))
    assert (centre[:, 0] > 0.95).all() and (centre[:, 1:] < 0.2).all()  # red at the orbit centre, every frame
    assert torch.allclose(frames[:, :, 0, 0], torch.ones(6, 3))  # white background in the corners


@pytest.mark.parametrize("suffix", ["gif", "mp4"])
def test_video_round_trip(tmp_path, suffix):
    import imageio.v3 as iio

    frames = np.zeros((5, 15, 17, 3), np.uint8)
    for i in range(5):
        frames[i, :, :, 0] = 50 * i
    path = write_video(frames, tmp_path / f"turntable.{suffix}", fps=10)
    back = iio.imread(path)
    assert back.shape[0] == 5 and back.shape[1:3] in ((15, 17), (16, 18))  # MP4 pads odd sizes to even
    assert np.abs(back[:, :15, :17, 0].astype(int) - frames[..., 0]).max() <= 12  # lossy codec tolerance
    with pytest.raises(ValueError, match="video format"):
        write_video(frames, tmp_path / "turntable.avi")
