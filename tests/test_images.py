import numpy as np
import pytest
from PIL import Image

from gslrm.data.images import crop_resize, foreground_window, load_rgba, square_window

WHITE = np.ones(3, np.float32)


def save(tmp_path, array, mode=None, **info):
    path = tmp_path / "image.png"
    image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    image.save(path, **info)
    return path


def test_rgba_is_composited_on_white_and_keeps_alpha(tmp_path):
    pixels = np.zeros((2, 2, 4), np.uint8)
    pixels[0, 0] = (255, 0, 0, 255)  # opaque red
    pixels[0, 1] = (0, 0, 255, 51)  # 20% blue
    rgba = load_rgba(save(tmp_path, pixels), WHITE)
    assert np.allclose(rgba[0, 0], [1, 0, 0, 1])
    assert np.allclose(rgba[0, 1], [0.8, 0.8, 1.0, 0.2], atol=1e-6)
    assert np.allclose(rgba[1, 1], [1, 1, 1, 0])


def test_rgb_gets_an_auto_mask(tmp_path):
    pixels = np.full((2, 3, 3), 255, np.uint8)
    pixels[0, 0] = (251, 251, 251)  # all > 250: background
    pixels[0, 1] = (251, 250, 251)  # one channel at 250: foreground
    pixels[1, 2] = (10, 20, 30)
    rgba = load_rgba(save(tmp_path, pixels), WHITE, mask_threshold=250)
    assert rgba[..., 3].tolist() == [[0, 1, 0], [0, 0, 1]]
    assert np.allclose(rgba[1, 2, :3], np.array([10, 20, 30]) / 255)


def test_grayscale_palette_and_16_bit(tmp_path):
    gray = np.array([[0, 128], [255, 255]], np.uint8)
    rgba = load_rgba(save(tmp_path, gray, "L"), WHITE)
    assert np.allclose(rgba[0, 1, :3], 128 / 255) and rgba[0, 1, 3] == 1 and rgba[1, 1, 3] == 0

    gray16 = np.array([[0, 32768], [65535, 65535]], np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(gray16).save(path)
    assert Image.open(path).mode.startswith("I")
    rgba = load_rgba(path, WHITE)
    assert np.allclose(rgba[0, 1, :3], 32768 / 65535, atol=1e-6) and rgba[1, 0, 3] == 0

    palette = Image.fromarray(np.array([[0, 1], [1, 1]], np.uint8), "P")
    palette.putpalette([255, 0, 0] + [0, 0, 0] * 255)
    palette.info["transparency"] = 1
    path = tmp_path / "palette.png"
    palette.save(path, transparency=1)
    rgba = load_rgba(path, WHITE)
    assert np.allclose(rgba[0, 0], [1, 0, 0, 1]) and np.allclose(rgba[1, 1], [1, 1, 1, 0])


def test_square_windows():
    assert square_window(288, 256, "crop") == (16.0, 0.0, 256.0)
    assert square_window(288, 256, "pad") == (0.0, -16.0, 288.0)
    with pytest.raises(ValueError):
        square_window(4, 4, "stretch")


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_intrinsics_follow_the_pixels(mode):
    """A 2x2 marker at raw pixels x 12-13, y 8-9 (centre (13, 9)) must land where the new intrinsics project it."""
    rgba = np.ones((32, 36, 4), np.float32)
    rgba[..., 3] = 0
    rgba[8:10, 12:14] = (0, 0, 0, 1)
    k = np.array([40.0, 42.0, 18.0, 16.0])
    point_cam = np.array([(13.0 - k[2]) / k[0], (9.0 - k[3]) / k[1], 1.0])  # projects to raw (13, 9)
    window = square_window(36, 32, mode)
    out, k2 = crop_resize(rgba, k, window, 16, WHITE)
    u, v = k2[0] * point_cam[0] + k2[2], k2[1] * point_cam[1] + k2[3]
    row, col = np.unravel_index(np.argmax(out[3]), out[3].shape)
    assert (int(v), int(u)) == (row, col)
    # fy/cy scale with the window's height, fx/cx with its width (scaling cy by the x ratio is a known mistake)
    assert np.isclose(k2[3], 8.0) and np.isclose(k2[2], 8.0)
    assert np.isclose(k2[1] / k2[0], 42.0 / 40.0)


def test_padding_is_background_without_alpha():
    rgba = np.zeros((4, 2, 4), np.float32)
    rgba[..., 3] = 1
    out, _ = crop_resize(rgba, np.array([1.0, 1, 1, 2]), square_window(2, 4, "pad"), 4, WHITE)
    assert np.allclose(out[:, :, 0], [[1] * 4] * 3 + [[0] * 4]) and np.allclose(out[:, :, 3], [[1] * 4] * 3 + [[0] * 4])
    assert np.allclose(out[:, :, 1:3], np.array([0, 0, 0, 1.0])[:, None, None])


def test_foreground_windows_share_one_zoom():
    a = np.zeros((40, 40))
    a[5:15, 5:25] = 1  # 20 wide
    b = np.zeros((40, 40))
    b[20:30, 20:30] = 1  # 10 wide
    windows = foreground_window([a, b], margin=0.0)
    assert windows[0] == (5.0, 0.0, 20.0) and windows[1] == (15.0, 15.0, 20.0)
