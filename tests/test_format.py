"""Every malformed input gives a one-line error naming the file and the field."""

import json

import numpy as np
import pytest

from gslrm.data.dataset import DataConfig, ViewDataset
from gslrm.data.format import DataFormatError, read_cameras


def edit_frames(sample, change):
    path = sample / "opencv_cameras.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))
    return path


def expect_error(path, field):
    with pytest.raises(DataFormatError) as info:
        read_cameras(path)
    message = str(info.value)
    assert str(path) in message and field in message and "\n" not in message
    return message


def test_valid_file_reads(tiny_root):
    frames = read_cameras(tiny_root / "s0" / "opencv_cameras.json")
    assert len(frames) == 6 and frames[0].width == 36 and frames[0].height == 32
    assert np.allclose(np.linalg.norm(frames[0].c2w[:3, 3]), 2.7)


def test_malformed_json(tiny_root):
    path = tiny_root / "s0" / "opencv_cameras.json"
    path.write_text('{"frames": [')
    expect_error(path, "invalid JSON")


def test_missing_file(tmp_path):
    expect_error(tmp_path / "opencv_cameras.json", "file not found")


def test_missing_frames_key(tiny_root):
    expect_error(edit_frames(tiny_root / "s0", lambda d: d.pop("frames")), "frames")


@pytest.mark.parametrize("key", ["w", "h", "fx", "fy", "cx", "cy", "w2c", "file_path"])
def test_missing_frame_key(tiny_root, key):
    path = edit_frames(tiny_root / "s0", lambda d: d["frames"][2].pop(key))
    expect_error(path, f"frames[2].{key}: missing")


def test_non_finite_w2c(tiny_root):
    def change(document):
        document["frames"][1]["w2c"][0][3] = float("nan")

    path = tiny_root / "s0" / "opencv_cameras.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))  # json writes NaN, which Python reads back
    expect_error(path, "frames[1].w2c: contains NaN")


def test_singular_w2c(tiny_root):
    def change(document):
        document["frames"][4]["w2c"] = [[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 1]]

    expect_error(edit_frames(tiny_root / "s0", change), "frames[4].w2c: singular")


def test_scaled_w2c_is_not_a_rigid_transform(tiny_root):
    def change(document):
        w2c = np.array(document["frames"][0]["w2c"])
        w2c[:3, :3] *= 2.0
        document["frames"][0]["w2c"] = w2c.tolist()

    expect_error(edit_frames(tiny_root / "s0", change), "frames[0].w2c: rotation is not orthonormal")


def test_reflected_w2c(tiny_root):
    def change(document):
        w2c = np.array(document["frames"][2]["w2c"])
        w2c[0, :3] *= -1.0  # a flipped axis: orthonormal but a reflection
        document["frames"][2]["w2c"] = w2c.tolist()

    expect_error(edit_frames(tiny_root / "s0", change), "frames[2].w2c: rotation is a reflection")


def test_negative_focal(tiny_root):
    expect_error(edit_frames(tiny_root / "s0", lambda d: d["frames"][3].update(fx=-5)), "frames[3].fx")


def dataset_error(root, **overrides):
    dataset = ViewDataset(DataConfig(root=str(root), image_size=16, **overrides), "train")
    with pytest.raises(DataFormatError) as info:
        dataset[0]
    return str(info.value)


def test_image_size_mismatch(tiny_root):
    edit_frames(tiny_root / "s0", lambda d: d["frames"][1].update(w=40))
    message = dataset_error(tiny_root)
    assert "s0/opencv_cameras.json" in message and "frames[1].w/h" in message and "36x32" in message


def test_missing_image(tiny_root):
    (tiny_root / "s0" / "images" / "cam_002.png").unlink()
    message = dataset_error(tiny_root)
    assert "cam_002.png" in message and "image: file not found" in message


def test_truncated_image(tiny_root):
    path = tiny_root / "s0" / "images" / "cam_005.png"
    path.write_bytes(path.read_bytes()[:60])
    message = dataset_error(tiny_root)
    assert "cam_005.png" in message and "image: truncated" in message


def test_view_count_differs_from_config(tiny_root):
    message = dataset_error(tiny_root, num_views=8, num_input_views=4)
    assert "s0/opencv_cameras.json" in message and "frames: 6 views but data.num_views=8" in message


def test_missing_split_file(tmp_path):
    with pytest.raises(DataFormatError, match=r"train.txt: split file not found"):
        ViewDataset(DataConfig(root=str(tmp_path)), "train")


def test_skip_policy_counts_and_never_substitutes(tiny_root, caplog):
    edit_frames(tiny_root / "s1", lambda d: d.pop("frames"))
    dataset = ViewDataset(DataConfig(root=str(tiny_root), image_size=16, on_error="skip"), "train")
    assert dataset[0] is not None
    assert dataset[1] is None and dataset[1] is None  # skipped, not replaced by another sample
    assert dataset.skipped == {1}
    assert sum("skipping sample" in r.message for r in caplog.records) == 1  # warned once per sample

    from gslrm.data.datamodule import collate_views

    batch = collate_views([dataset[0], dataset[1], dataset[2]])
    assert batch["image"].shape[0] == 2 and batch["num_skipped"].item() == 1
