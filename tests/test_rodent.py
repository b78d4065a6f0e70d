"""The generated default dataset: exact calibration, real rig proportions, and the check tool on it."""

import json

import numpy as np
import pytest
from PIL import Image

from gslrm.data.check import main as check_main
from gslrm.data.dataset import DataConfig, ViewDataset
from gslrm.data.format import read_cameras
from gslrm.rig import NormalizationConfig


def load_view(sample, frame):
    image = np.asarray(Image.open(sample / frame.file_path))
    depth = np.load(sample / "depth" / (frame.file_path.split("/")[-1].replace(".png", ".npy")))
    return image, depth


def test_layout_and_manifest(rodent_root):
    assert (rodent_root / "train.txt").read_text().split() == ["sample_000000", "sample_000001", "sample_000002"]
    assert (rodent_root / "val.txt").read_text().split() == ["sample_000003"]
    manifest = json.loads((rodent_root / "manifest.json").read_text())
    assert manifest["config"]["samples"] == 4 and manifest["image"] == [288, 256]
    frames = read_cameras(rodent_root / "sample_000000" / "opencv_cameras.json")
    assert len(frames) == 6 and {(f.width, f.height) for f in frames} == {(288, 256)}
    image, depth = load_view(rodent_root / "sample_000000", frames[0])
    assert image.shape == (256, 288, 4) and depth.shape == (256, 288)
    # RGBA: the alpha is the exact mask; background is exact white where there is no depth; the animal is in view
    assert (image[..., 3] == np.where(depth > 0, 255, 0)).all()
    assert (image[depth == 0][:, :3] == 255).all() and 0.02 < (depth > 0).mean() < 0.6


def test_a_white_animal_keeps_its_whole_mask(tmp_path):
    # the white coat's lit fur is above the auto-mask's threshold in every channel: written as RGB (generator
    # version 2) the loader lost about half of it seen from above, in holes; the RGBA alpha is the renderer's coverage
    from gslrm.data.images import load_rgba
    from gslrm.data.rodent import COATS, RodentConfig, RodentScene, write_views

    scene = RodentScene()
    try:
        joints, yaw, offset = scene.random_pose(np.random.default_rng(0), RodentConfig())
        scene.place(joints, yaw, offset, np.asarray(COATS[0]))
        c2w = np.eye(4)  # not read back here
        views = [(c2w, *scene.render(camera)) for camera in (4, 5)]  # seen from above: the lit back
    finally:
        scene.close()
    write_views(tmp_path, "cam", views, "white")
    white = np.ones(3, np.float32)
    for index, (_, rgb, depth) in enumerate(views):
        animal = depth > 0
        rgba = load_rgba(tmp_path / "images" / f"cam_{index:03d}.png", white)
        assert ((rgba[..., 3] > 0.5) == animal).all()
        assert np.allclose(rgba[..., :3], rgb / 255.0, atol=1e-6)
        Image.fromarray(rgb).save(tmp_path / "rgb.png")
        auto = load_rgba(tmp_path / "rgb.png", white)[..., 3] > 0.5
        assert (auto & animal).sum() < 0.9 * animal.sum()  # what the RGB file lost: why the alpha is written


def test_cached_dataset_is_reused(rodent_root):
    from gslrm.data.rodent import ensure_dataset

    stamp = (rodent_root / "manifest.json").stat().st_mtime_ns
    ensure_dataset(rodent_root, samples=4, val_samples=1, seed=3)
    assert (rodent_root / "manifest.json").stat().st_mtime_ns == stamp


def dilate(mask):
    """3x3 binary dilation: the silhouette is sampled at pixel centres, so a surface point that projects onto
    the silhouette's edge may fall in a background pixel next to it."""
    padded = np.pad(mask, 1)
    return np.max(
        [
            padded[1 + dy : padded.shape[0] - 1 + dy, 1 + dx : padded.shape[1] - 1 + dx]
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        ],
        axis=0,
    )


def reprojection_stats(sample, rotate_deg=0.0):
    """Back-project every foreground pixel of each view with its z-depth and reproject it into the other views."""
    frames = read_cameras(sample / "opencv_cameras.json")
    depths = [load_view(sample, frame)[1] for frame in frames]
    tweak = np.eye(3)
    angle = np.radians(rotate_deg)
    tweak[::2, ::2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]  # pan about y
    strict = near = total = 0
    errors = []
    for i, frame in enumerate(frames):
        rows, cols = np.nonzero(depths[i] > 0)
        z = depths[i][rows, cols]
        fx, fy, cx, cy = frame.fxfycxcy
        camera_points = np.stack([(cols + 0.5 - cx) / fx * z, (rows + 0.5 - cy) / fy * z, z], -1)
        world = camera_points @ frame.c2w[:3, :3].T + frame.c2w[:3, 3]
        for j, other in enumerate(frames):
            if j == i:
                continue
            rotation = tweak @ other.w2c[:3, :3]
            cam = world @ rotation.T + other.w2c[:3, 3]
            fx, fy, cx, cy = other.fxfycxcy
            u, v = fx * cam[:, 0] / cam[:, 2] + cx, fy * cam[:, 1] / cam[:, 2] + cy
            inside = (u >= 0) & (u < other.width) & (v >= 0) & (v < other.height)
            pu, pv = u[inside].astype(int), v[inside].astype(int)
            depth_j = depths[j][pv, pu]
            strict += int((depth_j > 0).sum())
            near += int(dilate(depths[j] > 0)[pv, pu].sum())
            total += int(inside.sum())
            seen = depth_j > 0
            errors.append(np.abs(depth_j[seen] - cam[inside][seen, 2]) / cam[inside][seen, 2])
    return strict / total, near / total, np.concatenate(errors), total


@pytest.mark.parametrize("sample_name", ["sample_000000", "sample_000002"])
def test_calibration_is_exact_by_reprojection(rodent_root, sample_name):
    strict, near, errors, total = reprojection_stats(rodent_root / sample_name)
    assert total > 10000
    assert near >= 0.99, f"foreground hit rate (1 px silhouette tolerance) {near:.4f}"
    assert strict >= 0.95, f"foreground hit rate (exact pixel) {strict:.4f}"
    # depth agreement: unoccluded points agree to well under 0.1% (occluded ones cannot agree at all);
    # an off-by-one intrinsics, a Euclidean-vs-z depth mix-up or a wrong pose all break this
    assert np.quantile(errors, 0.2) < 1e-3, np.quantile(errors, 0.2)


def silhouette_hit_rate(sample, folder, pan_deg=0.0):
    """Rig-view surface points of ``sample``, back-projected with their depth, that land on the silhouettes of the
    views in ``sample/folder`` (its cameras panned by ``pan_deg``)."""
    points = []
    for frame in read_cameras(sample / "opencv_cameras.json"):
        depth = load_view(sample, frame)[1]
        rows, cols = np.nonzero(depth > 0)
        z = depth[rows, cols]
        fx, fy, cx, cy = frame.fxfycxcy
        camera_points = np.stack([(cols + 0.5 - cx) / fx * z, (rows + 0.5 - cy) / fy * z, z], -1)
        points.append(camera_points @ frame.c2w[:3, :3].T + frame.c2w[:3, 3])
    world = np.concatenate(points)
    angle = np.radians(pan_deg)
    pan = np.array([[np.cos(angle), 0, -np.sin(angle)], [0, 1, 0], [np.sin(angle), 0, np.cos(angle)]])
    hits = total = 0
    for frame in read_cameras(sample / folder / "opencv_cameras.json"):
        silhouette = dilate(np.asarray(Image.open(sample / folder / frame.file_path))[..., 3] > 0)  # the alpha
        cam = world @ (pan @ frame.w2c[:3, :3]).T + pan @ frame.w2c[:3, 3]
        fx, fy, cx, cy = frame.fxfycxcy
        u, v = fx * cam[:, 0] / cam[:, 2] + cx, fy * cam[:, 1] / cam[:, 2] + cy
        inside = (u >= 0) & (u < frame.width) & (v >= 0) & (v < frame.height)
        hits += int(silhouette[v[inside].astype(int), u[inside].astype(int)].sum())
        total += int(inside.sum())
    return hits / total


def test_orbit_views_of_val_samples_are_exact_by_reprojection(rodent_root):
    """Held-out orbit views (val samples only): rig-view surface points, back-projected with their depth, land on
    every orbit view's silhouette; a 1 degree pan of the orbit cameras does not."""
    assert not (rodent_root / "sample_000000" / "orbit").exists()  # train samples have none
    sample = rodent_root / "sample_000003"
    orbit = read_cameras(sample / "orbit" / "opencv_cameras.json")
    assert len(orbit) == 16 and {(f.width, f.height) for f in orbit} == {(288, 256)}
    assert silhouette_hit_rate(sample, "orbit") >= 0.99
    assert silhouette_hit_rate(sample, "orbit", pan_deg=1.0) < 0.97


def test_supervision_views_of_train_samples_are_exact_whole_and_random(tmp_path, rodent_root):
    """supervision_views: every train sample gets that many views from random viewpoints in the rig's band of
    distances and elevations, exact by reprojection (silhouettes and depth), with the whole animal in frame; val
    samples get none; the poses are those of the dataset without them, whose manifest is the one from before."""
    from gslrm.data.rodent import (
        RIG_CENTER,
        SUPERVISION_DISTANCE,
        SUPERVISION_ELEVATION_DEG,
        RodentConfig,
        ensure_dataset,
        manifest,
    )

    root = ensure_dataset(tmp_path / "supervised", samples=3, val_samples=1, seed=3, supervision_views=4)
    positions = []
    for name in ["sample_000000", "sample_000001"]:
        sample = root / name
        frames = read_cameras(sample / "supervision" / "opencv_cameras.json")
        assert len(frames) == 4 and {(f.width, f.height) for f in frames} == {(288, 256)}
        assert silhouette_hit_rate(sample, "supervision") >= 0.99
        assert silhouette_hit_rate(sample, "supervision", pan_deg=1.0) < 0.97
        for frame in frames:
            image = np.asarray(Image.open(sample / "supervision" / frame.file_path))
            depth = np.load(sample / "supervision" / "depth" / frame.file_path.split("/")[-1].replace(".png", ".npy"))
            foreground = depth > 0
            assert (image[~foreground][:, :3] == 255).all() and (image[..., 3] == foreground * 255).all()
            assert foreground.mean() > 0.01
            border = np.concatenate([foreground[0], foreground[-1], foreground[:, 0], foreground[:, -1]])
            assert not border.any()  # the whole animal is in frame
            offset = frame.c2w[:3, 3] - RIG_CENTER  # on a sphere about the rig centre (only the aim is jittered)
            distance = np.linalg.norm(offset)
            elevation = np.degrees(np.arcsin(offset[2] / distance))
            assert SUPERVISION_DISTANCE[0] - 1e-6 <= distance <= SUPERVISION_DISTANCE[1] + 1e-6
            assert SUPERVISION_ELEVATION_DEG[0] - 1e-6 <= elevation <= SUPERVISION_ELEVATION_DEG[1] + 1e-6
            positions.append(frame.c2w[:3, 3])
    assert len({tuple(p.round(6)) for p in positions}) == 8
    assert not (root / "sample_000002" / "supervision").exists()
    poses = json.loads((root / "poses.json").read_text())
    without = json.loads((rodent_root / "poses.json").read_text())  # seed 3 too, 4 samples
    assert poses["sample_000000"] == without["sample_000000"]
    assert "supervision_views" not in manifest(RodentConfig())["config"]


def test_rig_jitter_moves_each_train_samples_cameras_and_keeps_them_exact(tmp_path, rodent_root):
    """rig_jitter: every train sample gets its own rig, written exactly as rendered (reprojection); the val sample
    keeps the fixed rig; the poses are the unjittered dataset's; a rig_jitter = 0 manifest is the one from before."""
    from gslrm.data.rodent import RIG, RodentConfig, ensure_dataset, manifest, rig_cameras

    root = ensure_dataset(tmp_path / "jittered", samples=3, val_samples=1, seed=3, rig_jitter=1.0)
    fixed = rig_cameras()[0]
    positions = []
    for name in ["sample_000000", "sample_000001"]:
        strict, near, errors, total = reprojection_stats(root / name)
        assert total > 10000 and near >= 0.99 and strict >= 0.95 and np.quantile(errors, 0.2) < 1e-3
        c2w = np.stack([frame.c2w for frame in read_cameras(root / name / "opencv_cameras.json")])
        moved = np.linalg.norm(c2w[:, :3, 3] - fixed[:, :3, 3], axis=1)
        # at most +-10 % of distance and +-8 deg on the sphere: under 0.1 d + 2 d sin(5.66 deg) = 0.3 d
        distances = np.array([camera[0] for camera in RIG])
        assert (moved > 1e-3).all() and (moved < 0.3 * distances).all()
        positions.append(c2w[:, :3, 3])
    assert not np.allclose(positions[0], positions[1])
    val = np.stack([frame.c2w for frame in read_cameras(root / "sample_000002" / "opencv_cameras.json")])
    assert np.allclose(val, fixed, atol=1e-6)
    poses = json.loads((root / "poses.json").read_text())
    unjittered = json.loads((rodent_root / "poses.json").read_text())  # seed 3 too, 4 samples
    assert poses["sample_000000"] == unjittered["sample_000000"]
    assert "rig_jitter" not in manifest(RodentConfig())["config"]


def test_extra_train_samples_leave_the_first_samples_and_the_val_split_as_they_were(tmp_path, rodent_root):
    """extra_train_samples: written after the val sample with poses of their own; the samples before them are the
    dataset without extras (poses, split), so a run on more data is scored on the same val samples."""
    from cli import TEST_RODENT

    from gslrm.data.rodent import RodentConfig, ensure_dataset, manifest

    root = ensure_dataset(tmp_path / "more", **TEST_RODENT, extra_train_samples=2)
    split = lambda folder, name: (folder / name).read_text().split()  # noqa: E731
    assert split(root, "val.txt") == split(rodent_root, "val.txt") == ["sample_000003"]
    assert split(root, "train.txt") == split(rodent_root, "train.txt") + ["sample_000004", "sample_000005"]
    poses = json.loads((root / "poses.json").read_text())
    without = json.loads((rodent_root / "poses.json").read_text())
    assert all(poses[name] == without[name] for name in without)
    extras = [poses["sample_000004"], poses["sample_000005"]]
    assert extras[0] != extras[1] and all(extra not in without.values() for extra in extras)
    assert not (root / "sample_000004" / "orbit").exists() and (root / "sample_000003" / "orbit").is_dir()
    assert "extra_train_samples" not in manifest(RodentConfig())["config"]


def test_every_generator_key_of_the_data_config_is_a_generator_field_and_can_be_set():
    """conf/data/rodent.yaml lists the generator's settings that users set from the command line: each one is a
    RodentConfig field (train.py passes them through), and the newest, extra_train_samples, is among them (it was
    documented as ``data.generator.extra_train_samples=N`` while Hydra refused the key as not in the config)."""
    from dataclasses import fields

    from conftest import compose

    from gslrm.data.rodent import RodentConfig

    generator = compose("config", "data.generator.extra_train_samples=3").data.generator
    assert set(generator) <= {field.name for field in fields(RodentConfig)}, set(generator)
    assert RodentConfig(**generator).extra_train_samples == 3
    assert {"samples", "val_samples", "seed", "rig_jitter", "supervision_views"} <= set(generator)


def test_reprojection_check_has_teeth(rodent_root):
    """The depth-agreement check fails when every target camera is panned by 1 degree."""
    _, _, errors, _ = reprojection_stats(rodent_root / "sample_000000", rotate_deg=1.0)
    assert np.quantile(errors, 0.2) > 2e-3  # the silhouette hit rate alone barely notices (fat body)


def test_check_reports_raw_rig_and_normalization(rodent_root, capsys):
    assert check_main([str(rodent_root), "--json", "--up", "0", "0", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 4 and report["errors"] == []
    assert 2.0 <= report["camera_distance"]["min"] and report["camera_distance"]["max"] <= 3.4
    assert abs(report["normalized_camera_distance"]["mean"] - 2.7) < 0.01
    assert report["normalized_centre_offset"]["max"] < 0.01
    assert 0.5 < report["mask_coverage"]["min"] and report["mask_coverage"]["max"] < 60
    assert any("camera distances" in warning for warning in report["warnings"])


def test_check_fails_on_broken_data(rodent_root, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(rodent_root, broken)
    (broken / "sample_000001" / "opencv_cameras.json").write_text("{")
    assert check_main([str(broken)]) == 1
    out = capsys.readouterr().out
    assert "ERROR:" in out and "sample_000001/opencv_cameras.json" in out


def test_loaded_rodent_cameras_are_normalized(rodent_root):
    config = DataConfig(root=str(rodent_root), image_size=32, normalization=NormalizationConfig(up=[0, 0, 1]))
    dataset = ViewDataset(config, "train")
    distances = np.concatenate([dataset[i]["c2w"][:, :3, 3].norm(dim=-1).numpy() for i in range(len(dataset))])
    assert abs(distances.mean() - 2.7) < 0.01 and 2.0 < distances.min() and distances.max() < 3.5
    sample = dataset[0]
    assert sample["image"].shape == (6, 4, 32, 32)
    assert 0.01 < sample["image"][:, 3].mean() < 0.6  # the alpha found the animal
