"""python -m gslrm.data import: a synthetic rodent recording written as MAMMAL, anipose (distorted), anipose through
fisheye lenses and DANNCE, imported back and checked by reprojection against the ground truth, by calibration round
trips, and for every kind of bad input."""

import json
import pickle
import shutil
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from gslrm.data.check import check_dataset
from gslrm.data.format import DataFormatError, read_cameras
from gslrm.data.recordings import anipose, dannce, mammal
from gslrm.data.recordings.camera import RigCamera, frame_kept, pinhole_positions, undistortion_maps
from gslrm.data.recordings.frames import parse_frames, parse_split, split_frames
from gslrm.data.recordings.importer import main as import_main
from gslrm.data.recordings.video import VideoSource, VideoWriter

FRAMES, WIDTH, HEIGHT = 20, 288, 256
FORMATS = ("mammal", "anipose", "dannce")
KINDS = (*FORMATS, "anipose_fisheye")  # the recordings: each format, and anipose through fisheye lenses


# one xdist worker for the module: its module-scoped recording and imports (~20 s) are then made once, not per worker
pytestmark = pytest.mark.xdist_group("import")

# no split files, one worker, no check report: what most import tests pass besides their own options
QUIET = ["--split", "", "--workers", "1", "--no-check"]


def format_of(kind):
    from gslrm.data.recordings.synthetic import RECORDINGS

    return RECORDINGS[kind][0]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    from gslrm.data.recordings.synthetic import record

    out = tmp_path_factory.mktemp("recording")
    record(out, KINDS, frames=FRAMES, width=WIDTH, height=HEIGHT, seed=5, depth=True)
    return out


@pytest.fixture(scope="module")
def imported(recording, tmp_path_factory):
    """Each recording imported at half size (144x128) with the default worker count (2 processes here)."""
    roots = {}
    for kind in KINDS:
        roots[kind] = tmp_path_factory.mktemp("imported") / kind
        code = import_main(
            [
                format_of(kind),
                str(recording / kind),
                "--out",
                str(roots[kind]),
                "--scale",
                "0.5",
                "--split",
                "val=0.1,test=0.1",
                "--split-gap",
                "1",
            ]
        )
        assert code == 0
    return roots


def run_import(capsys, *args):
    """(exit code, the one-line error) of a failing import."""
    capsys.readouterr()
    code = import_main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    return code, err


def copy_of(recording, format, tmp_path):
    target = tmp_path / format
    shutil.copytree(recording / format, target)
    return target


# --- the imported datasets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("format", KINDS)
def test_import_writes_the_documented_format(imported, format):
    root = imported[format]
    assert check_dataset(root).errors == []
    splits = {key: (root / f"{key}.txt").read_text().split() for key in ("train", "val", "test")}
    # 20 frames: train 0-15 | val 16-17 | test 18-19, and the frame before each boundary dropped (--split-gap 1)
    assert splits == {
        "train": [f"frame_{i:06d}" for i in range(15)],
        "val": ["frame_000016"],
        "test": ["frame_000018", "frame_000019"],
    }
    assert not (root / "frame_000015").exists() and not (root / "frame_000017").exists()
    frames = read_cameras(root / "frame_000003" / "opencv_cameras.json")
    assert len(frames) == 6 and {(f.width, f.height) for f in frames} == {(144, 128)}
    image = np.asarray(Image.open(root / "frame_000003" / "images" / "cam_002.png"))
    assert image.shape == (128, 144, 4)  # masks exist: RGBA with the mask as alpha
    coverage = (image[..., 3] > 127).mean()
    assert 0.02 < coverage < 0.6
    info = json.loads((root / "import_info.json").read_text())
    assert info["complete"] and info["frames"] == list(range(FRAMES)) and info["options"]["scale"] == 0.5
    assert info["dropped_for_split_gap"] == [15, 17]
    assert [v["undistorted"] for v in info["views"]] == [format != "mammal"] * 6  # skewed DANNCE is resampled too
    fisheye = format == "anipose_fisheye"
    assert [v["distortion_model"] for v in info["views"]] == ["opencv_fisheye" if fisheye else "opencv"] * 6
    assert {len(v["distortion"]) for v in info["views"]} == {4 if fisheye else 5}
    for view in info["views"]:  # measured: 0.92 / 0.97 (anipose's lenses), 0.86 / 0.90 (fisheye)
        if format.startswith("anipose"):
            assert 0.8 < view["frame_kept"] < 0.95 and 0.85 < view["focal_scale_keeping_all"] < 1.0
        elif format == "dannce":  # skew alone shears the corners by < 0.5 px: the whole frame is kept
            assert view["frame_kept"] == 1.0 and view["focal_scale_keeping_all"] == 1.0
        else:
            assert view["frame_kept"] is None and view["focal_scale_keeping_all"] is None
    assert info["decoder"].startswith("PyAV")


def dilate(mask):
    padded = np.pad(mask, 1)
    return np.max(
        [
            padded[1 + dy : padded.shape[0] - 1 + dy, 1 + dx : padded.shape[1] - 1 + dx]
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        ],
        axis=0,
    )


def reprojection_hit_rate(truth, root, frame, shift_px=0.0):
    """Foreground pixels of each ground-truth view, back-projected with their true depth, projected through the
    imported cameras into every imported view (itself included): the fraction landing within 1 px of its mask."""
    truth_frames = read_cameras(truth / "cameras.json")
    imported = read_cameras(root / f"frame_{frame:06d}" / "opencv_cameras.json")
    masks = [np.asarray(Image.open(root / f"frame_{frame:06d}" / f.file_path))[..., 3] > 127 for f in imported]
    hits = total = 0
    for i, view in enumerate(truth_frames):
        depth = np.load(truth / "depth" / f"frame_{frame:06d}_cam_{i:03d}.npy")
        rows, cols = np.nonzero(depth > 0)
        z = depth[rows, cols]
        fx, fy, cx, cy = view.fxfycxcy
        points = np.stack([(cols + 0.5 - cx) / fx * z, (rows + 0.5 - cy) / fy * z, z], -1)
        world = points @ view.c2w[:3, :3].T + view.c2w[:3, 3]
        for j, other in enumerate(imported):
            camera = world @ other.w2c[:3, :3].T + other.w2c[:3, 3]
            fx, fy, cx, cy = other.fxfycxcy
            u = fx * camera[:, 0] / camera[:, 2] + cx + shift_px
            v = fy * camera[:, 1] / camera[:, 2] + cy
            inside = (u >= 0) & (u < other.width) & (v >= 0) & (v < other.height)
            near = dilate(masks[j])[v[inside].astype(int), u[inside].astype(int)]
            hits, total = hits + int(near.sum()), total + int(inside.sum())
    return hits / total, total


def centroid_offsets(truth, root, frame, shift_px=0.0):
    """Per view, the imported mask's centroid minus the centroid of the true foreground pixels projected through
    the imported camera of the same view (output pixels): sensitive to a fraction of a pixel in K, the undistortion
    or the scaling convention. Returns the offsets, [views, 2] (x, y)."""
    truth_frames = read_cameras(truth / "cameras.json")
    imported = read_cameras(root / f"frame_{frame:06d}" / "opencv_cameras.json")
    offsets = []
    for i, (view, other) in enumerate(zip(truth_frames, imported, strict=True)):
        depth = np.load(truth / "depth" / f"frame_{frame:06d}_cam_{i:03d}.npy")
        rows, cols = np.nonzero(depth > 0)
        z = depth[rows, cols]
        fx, fy, cx, cy = view.fxfycxcy
        points = np.stack([(cols + 0.5 - cx) / fx * z, (rows + 0.5 - cy) / fy * z, z], -1)
        camera = (points @ view.c2w[:3, :3].T + view.c2w[:3, 3]) @ other.w2c[:3, :3].T + other.w2c[:3, 3]
        fx, fy, cx, cy = other.fxfycxcy
        u = fx * camera[:, 0] / camera[:, 2] + cx + shift_px
        v = fy * camera[:, 1] / camera[:, 2] + cy
        alpha = np.asarray(Image.open(root / f"frame_{frame:06d}" / other.file_path))[..., 3] / 255.0
        ys, xs = np.mgrid[: alpha.shape[0], : alpha.shape[1]] + 0.5
        centroid = np.array([(alpha * xs).sum(), (alpha * ys).sum()]) / alpha.sum()
        offsets.append(centroid - [u.mean(), v.mean()])
    return np.array(offsets)


@pytest.mark.parametrize("format", KINDS)
def test_reprojection_after_import_within_one_pixel(recording, imported, format):
    offsets = []
    for frame in (0, 9, 19):
        rate, total = reprojection_hit_rate(recording / "ground_truth", imported[format], frame)
        assert total > 20000 and rate >= 0.99, f"frame {frame}: {rate:.4f} of {total}"
        offsets.append(centroid_offsets(recording / "ground_truth", imported[format], frame))
    # measured over 20 frames x 6 views: at most 0.002 px after MAMMAL / DANNCE import; after undistortion (bilinear
    # twice) noise of std 0.03-0.04 px, at most 0.10 px (anipose) and 0.16 px (fisheye), with no bias (mean < 0.015 px)
    largest, bias = np.abs(offsets).max(), np.abs(np.mean(offsets, axis=(0, 1))).max()
    assert largest < (0.02 if format == "mammal" else 0.2), f"{largest:.3f} px"  # the others are resampled
    assert bias < 0.05, f"mean offset {bias:.3f} px"


def test_reprojection_checks_have_teeth(recording, imported):
    """A 2-pixel error fails the silhouette check; a quarter pixel (a half-pixel convention mix-up at the source
    resolution, halved by --scale 0.5) fails the centroid checks: the largest offset (formats without distortion) and
    the mean offset (any)."""
    rate, _ = reprojection_hit_rate(recording / "ground_truth", imported["mammal"], 9, shift_px=2.0)
    assert rate < 0.99
    assert np.abs(centroid_offsets(recording / "ground_truth", imported["mammal"], 9, shift_px=0.25)).max() > 0.2
    shifted = centroid_offsets(recording / "ground_truth", imported["anipose_fisheye"], 9, shift_px=0.25)
    assert abs(shifted[:, 0].mean()) > 0.2


def test_fisheye_lenses_read_as_standard_ones_fail_the_reprojection(recording, tmp_path):
    """Without ``fisheye = true`` the same 4 coefficients are OpenCV's standard (k1, k2, p1, p2): the import runs, and
    the reprojection checks must catch it. The silhouettes still overlap within a pixel (the animal is near the
    centre of the views, where the two models differ least: measured 0.997 of the pixels); the centroids do not
    (measured up to 0.59 px, against at most 0.16 px with the right model)."""
    src = copy_of(recording, "anipose_fisheye", tmp_path)
    (src / "calibration.toml").write_text((src / "calibration.toml").read_text().replace("fisheye = true\n", ""))
    out = tmp_path / "out"
    assert (
        import_main(
            [
                "anipose",
                str(src),
                "--out",
                str(out),
                "--frames",
                "9:10",
                "--scale",
                "0.5",
                *QUIET,
            ]
        )
        == 0
    )
    assert np.abs(centroid_offsets(recording / "ground_truth", out, 9)).max() > 0.4


def skew_error(truth, frame, scale):
    """Per view: where ignoring the camera's skew would put the mask's centroid, relative to the truth (output px):
    s x the mean y_d = (v - cy) / fy of the true foreground pixels, times the import's scale."""
    from gslrm.data.recordings.synthetic import rig_skew

    errors = []
    for i, view in enumerate(read_cameras(truth / "cameras.json")):
        rows, _ = np.nonzero(np.load(truth / "depth" / f"frame_{frame:06d}_cam_{i:03d}.npy") > 0)
        fx, fy, cx, cy = view.fxfycxcy
        errors.append(rig_skew(i, view.width) * ((rows + 0.5 - cy) / fy).mean() * scale)
    return np.array(errors)


@pytest.mark.parametrize("kind", ["dannce", "anipose"])
def test_skew_is_removed_and_ignoring_it_is_caught(recording, imported, tmp_path, monkeypatch, kind):
    """The DANNCE and anipose recordings are sheared by the real rig's skews (-5.9..+1.4 px at 1152 px). Per view,
    the imported mask's x offset regressed on the offset that ignoring the skew would cause (about 0.05 px here at
    the most skewed views): slope ~0 (measured 0.24 DANNCE / -0.04 anipose over 18 frames x 6 views), and ~1 when
    the importer drops the skew as OpenCV's maps do (measured 1.25 / 0.98)."""
    import gslrm.data.recordings.camera as camera_module

    truth = recording / "ground_truth"
    frames = [f for f in range(FRAMES) if (imported[kind] / f"frame_{f:06d}").is_dir()]  # split gaps dropped 2

    def slope(root):
        offsets = np.concatenate([centroid_offsets(truth, root, f)[:, 0] for f in frames])
        expected = np.concatenate([skew_error(truth, f, 0.5) for f in frames])
        return float(offsets @ expected / (expected @ expected))

    assert abs(slope(imported[kind])) < 0.4
    monkeypatch.setattr(camera_module, "_skew_shift", lambda camera, v: np.zeros_like(v))  # the old behaviour
    out = tmp_path / "unskewed"
    assert (
        import_main(
            [
                format_of(kind),
                str(recording / kind),
                "--out",
                str(out),
                "--scale",
                "0.5",
                *QUIET,
            ]
        )
        == 0
    )  # in-process: the patch applies
    assert slope(out) > 0.7


@pytest.mark.parametrize("kind", ["anipose_fisheye", "mammal"])
def test_focal_scale_widens_the_written_camera(recording, tmp_path, kind):
    """--focal-scale 0.8: the written fx, fy are 0.8 x the calibration's (principal point kept), every camera is
    resampled (a pinhole one too), and the images still agree with the ground truth by reprojection."""
    out = tmp_path / "out"
    assert (
        import_main(
            [
                format_of(kind),
                str(recording / kind),
                "--out",
                str(out),
                "--frames",
                "9:10",
                "--scale",
                "0.5",
                "--focal-scale",
                "0.8",
                *QUIET,
            ]
        )
        == 0
    )
    truth = read_cameras(recording / "ground_truth" / "cameras.json")
    for expected, actual in zip(truth, read_cameras(out / "frame_000009" / "opencv_cameras.json"), strict=True):
        np.testing.assert_allclose(actual.fxfycxcy, expected.fxfycxcy * [0.4, 0.4, 0.5, 0.5], atol=1e-9)
    info = json.loads((out / "import_info.json").read_text())
    assert info["options"]["focal_scale"] == 0.8 and all(v["undistorted"] for v in info["views"])
    assert all(v["frame_kept"] == 1.0 for v in info["views"])  # 0.8 < the ~0.9 at which all of a frame fits
    rate, total = reprojection_hit_rate(recording / "ground_truth", out, 9)
    assert total > 5000 and rate >= 0.99
    assert np.abs(centroid_offsets(recording / "ground_truth", out, 9)).max() < 0.2


@pytest.mark.parametrize("format", [*KINDS, "dannce_label3d"])
def test_calibration_round_trip_through_import(recording, tmp_path, format):
    """gslrm cameras -> the format's calibration -> import at full size gives back w2c and intrinsics."""
    out, src = tmp_path / "full", recording / format
    if format == "dannce_label3d":  # without calibration/, the importer reads label3d_dannce.mat
        format, src = "dannce", copy_of(recording, "dannce", tmp_path)
        shutil.rmtree(src / "calibration")
    format = format_of(format) if format in KINDS else format
    assert (
        import_main(
            [format, str(src), "--out", str(out), "--frames", "0:3", "--split", "", "--workers", "1", "--no-check"]
        )
        == 0
    )
    truth = read_cameras(recording / "ground_truth" / "cameras.json")
    for frame in range(3):
        got = read_cameras(out / f"frame_{frame:06d}" / "opencv_cameras.json")
        for expected, actual in zip(truth, got, strict=True):
            np.testing.assert_allclose(actual.w2c, expected.w2c, rtol=0, atol=1e-6)
            np.testing.assert_allclose(actual.fxfycxcy, expected.fxfycxcy, rtol=0, atol=1e-6)


def test_scale_follows_the_pixel_centre_convention(recording, imported):
    """0.5x: gslrm cx (edges at integers) halves; in OpenCV terms cx' = (cx + 0.5) * 0.5 - 0.5."""
    truth = read_cameras(recording / "ground_truth" / "cameras.json")
    got = read_cameras(imported["mammal"] / "frame_000000" / "opencv_cameras.json")
    for expected, actual in zip(truth, got, strict=True):
        np.testing.assert_allclose(actual.fxfycxcy, expected.fxfycxcy * 0.5, atol=1e-9)
        opencv_cx = expected.fxfycxcy[2] - 0.5
        assert actual.fxfycxcy[2] - 0.5 == pytest.approx((opencv_cx + 0.5) * 0.5 - 0.5)
    assert got[0].fxfycxcy[2] == pytest.approx(72.0)  # the rig's centred principal point in a 144-wide image


def random_cameras(rng, count=3, distorted=False, size=(640, 480), fisheye=False):
    from scipy.spatial.transform import Rotation

    cameras = []
    for index in range(count):
        K = np.array(
            [
                [rng.uniform(300, 900), 0.0, rng.uniform(200, 400)],
                [0.0, rng.uniform(300, 900), rng.uniform(150, 300)],
                [0.0, 0.0, 1.0],
            ]
        )
        if fisheye:
            dist = np.array([rng.uniform(-0.05, 0.05), rng.uniform(-0.01, 0.01), 2e-3, -1e-3])
        elif distorted:
            dist = np.array([rng.uniform(-0.3, 0.1), rng.uniform(-0.1, 0.1), 1e-3, -2e-3, 0.01])
        else:
            dist = np.zeros(5)
        R = Rotation.from_rotvec(rng.normal(size=3)).as_matrix()
        cameras.append(RigCamera(f"cam{index}", K, R, rng.normal(scale=300, size=3), dist, size, fisheye))
    return cameras


def savemat_v73(path, variables):
    """What MATLAB's ``save -v7.3`` writes (HDF5 with MATLAB's class attributes and a #refs# group for cells),
    written by hdf5storage: another library than the mat73 the importer reads it with."""
    import hdf5storage

    hdf5storage.savemat(str(path), variables, format="7.3", matlab_compatible=True)


@pytest.mark.parametrize(
    "writer",
    [
        "mammal",
        "anipose",
        "anipose_fisheye",
        "dannce_hires",
        "dannce_label3d",
        "dannce_hires_v73",
        "dannce_label3d_v73",
    ],
)
def test_calibration_files_round_trip(tmp_path, writer):
    cameras = random_cameras(
        np.random.default_rng(1), distorted=writer != "mammal", fisheye=writer == "anipose_fisheye"
    )
    if writer == "mammal":
        mammal.write_calibration(tmp_path / mammal.CALIBRATION, cameras)
        read = mammal.read_calibration(tmp_path / mammal.CALIBRATION)
    elif writer.startswith("anipose"):
        anipose.write_calibration(tmp_path / anipose.CALIBRATION, cameras)
        read = anipose.read_calibration(tmp_path / anipose.CALIBRATION)
    elif writer == "dannce_hires_v73":
        (tmp_path / "calibration").mkdir()
        for index, camera in enumerate(cameras):
            savemat_v73(tmp_path / "calibration" / f"hires_cam{index + 1}_params.mat", dannce.hires_variables(camera))
        _, read = dannce.read_calibration(tmp_path)
    elif writer == "dannce_label3d_v73":  # with the labels a real Label3D file holds next to the calibration
        labels = np.empty((len(cameras), 1), dtype=object)
        for index in range(len(cameras)):
            labels[index, 0] = {
                "data_2d": np.zeros((4, 46)),
                "data_3d": np.zeros((4, 69)),
                "data_frame": np.arange(4.0),
            }
        savemat_v73(tmp_path / dannce.LABEL3D, dannce.label3d_variables(cameras) | {"labelData": labels})
        _, read = dannce.read_calibration(tmp_path)
        assert [c.name for c in read] == [c.name for c in cameras]
    else:
        (dannce.write_hires if writer == "dannce_hires" else dannce.write_label3d)(tmp_path, cameras)
        _, read = dannce.read_calibration(tmp_path)
    for expected, actual in zip(cameras, read, strict=True):
        for field in ("K", "R", "t", "dist"):
            np.testing.assert_allclose(getattr(actual, field), getattr(expected, field), rtol=0, atol=1e-9)
        assert actual.fisheye == expected.fisheye


def fisheye_camera(k1=0.0):
    """f = 100, principal point (50, 50) (OpenCV's convention), fisheye (k1, 0, 0, 0), 200x100 frames."""
    K = np.array([[100.0, 0.0, 50.0], [0.0, 100.0, 50.0], [0.0, 0.0, 1.0]])
    return RigCamera("fish", K, np.eye(3), np.zeros(3), np.array([k1, 0.0, 0.0, 0.0]), (200, 100), fisheye=True)


def test_fisheye_model_by_hand():
    """A ray at angle theta lands at f * theta * (1 + k1 theta^2) through the fisheye and at f * tan(theta) in the
    pinhole camera the importer writes. theta = 0.5, k1 = 0.1: 100 * 0.5 * 1.025 = 51.25 px -> 100 * tan 0.5 =
    54.630 px. The pinhole pixel 100 px right of the centre (theta = pi/4) is read from 83.3845 px right of it
    (pi/4 * (1 + 0.1 (pi/4)^2) = 0.833845)."""
    camera = fisheye_camera(k1=0.1)
    assert not camera.is_pinhole and not fisheye_camera(k1=0.0).is_pinhole  # equidistant is not pinhole
    np.testing.assert_allclose(
        pinhole_positions(camera, [[50.0 + 51.25, 50.0], [50.0, 50.0 - 51.25]]),
        [[50.0 + 54.630249, 50.0], [50.0, 50.0 - 54.630249]],
        atol=1e-5,
    )
    map_x, map_y = undistortion_maps(camera, 200, 100)
    assert map_x.shape == (100, 200)
    assert map_x[50, 150] == pytest.approx(50.0 + 83.3845, abs=1e-3) and map_y[50, 150] == pytest.approx(50.0, abs=1e-4)
    assert map_x[50, 50] == pytest.approx(50.0, abs=1e-4)  # the centre stays
    standard = RigCamera("lens", camera.K, np.eye(3), np.zeros(3), np.zeros(5), (200, 100))
    assert standard.is_pinhole  # the same K through OpenCV's standard model with zero coefficients
    assert frame_kept(standard, 200, 100) == (1.0, 1.0)
    kept, scale = frame_kept(camera, 200, 100)  # the frame's right edge is at theta ~ 1.24 rad: far outside
    assert kept < 0.9 and scale < 0.6
    assert frame_kept(camera, 200, 100, scale)[0] == 1.0 and frame_kept(camera, 200, 100, scale * 1.02)[0] < 1.0


@pytest.mark.parametrize("matlab", ["v7", "v7.3"])
def test_dannce_conventions_by_hand(tmp_path, matlab):
    """A MATLAB row-vector calibration: [X 1] [r; t] K with 1-based pixels projects like OpenCV's K [R t] X."""
    from scipy.io import savemat

    K_matlab = np.array([[800.0, 0, 0], [0, 820.0, 0], [321.0, 241.0, 1.0]])  # cx, cy 1-based
    r = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # MATLAB's r = R^T
    (tmp_path / "calibration").mkdir()
    (savemat if matlab == "v7" else savemat_v73)(
        str(tmp_path / "calibration" / "hires_cam1_params.mat"),
        {
            "K": K_matlab,
            "r": r,
            "t": np.array([[10.0, -5.0, 500.0]]),
            "RDistort": np.array([[-0.1, 0.02]]),
            "TDistort": np.array([[0.001, 0.002]]),
        },
    )
    _, (camera,) = dannce.read_calibration(tmp_path)
    X = np.array([30.0, -20.0, 40.0])
    row = (np.append(X, 1.0) @ np.vstack([r, [[10.0, -5.0, 500.0]]])) @ K_matlab
    matlab_pixel = row[:2] / row[2]
    camera_point = camera.R @ X + camera.t
    opencv_pixel = (camera.K @ camera_point)[:2] / camera_point[2]
    np.testing.assert_allclose(opencv_pixel, matlab_pixel - 1.0, atol=1e-9)  # 1-based -> 0-based
    np.testing.assert_allclose(camera.dist, [-0.1, 0.02, 0.001, 0.002, 0.0])
    assert camera.name == "Camera1"


def test_bad_matlab_v73_files_give_one_line(tmp_path):
    (tmp_path / "calibration").mkdir()
    path = tmp_path / "calibration" / "hires_cam1_params.mat"
    savemat_v73(path, {"K": np.eye(3), "r": np.eye(3)})
    with pytest.raises(DataFormatError, match=r"hires_cam1_params.mat.t: missing"):
        dannce.read_calibration(tmp_path)
    path.write_bytes(path.read_bytes()[:3000])  # a copy cut short
    with pytest.raises(DataFormatError, match=r"hires_cam1_params.mat: not a readable MATLAB v7.3 file"):
        dannce.read_calibration(tmp_path)


# --- options: frames, splits, masks, resume, chunks -----------------------------------------------------------


def test_parse_frames(tmp_path):
    assert parse_frames("0:10:3", 0) == [0, 3, 6, 9]
    assert parse_frames("5:", 8) == [5, 6, 7]
    assert parse_frames(None, 4) == [0, 1, 2, 3]
    listing = tmp_path / "frames.txt"
    listing.write_text("12\n# a comment\n3\n3\n\n7  # trailing\n")
    assert parse_frames(str(listing), 0) == [3, 7, 12]
    listing.write_text("4\nfive\n")
    with pytest.raises(DataFormatError, match=r"frames.txt: line 2: expected a frame index"):
        parse_frames(str(listing), 0)
    with pytest.raises(DataFormatError, match="give STOP"):
        parse_frames("0::2", 0)
    with pytest.raises(DataFormatError, match="neither"):
        parse_frames("ten", 10)


def test_split_blocks_and_gap():
    frames = list(range(0, 200, 10))  # 20 frames, 10 source frames apart
    splits, dropped = split_frames(frames, parse_split("val=0.1,test=0.1"), gap=15)
    # blocks: train 0..150 | val 160, 170 | test 180, 190; within 15 frames before 160: 150; before 180: 170
    assert splits == {"train": list(range(0, 150, 10)), "val": [160], "test": [180, 190]}
    assert dropped == [150, 170]
    with pytest.raises(DataFormatError, match="--split-gap 25: leaves no val frames"):
        split_frames(frames, parse_split("val=0.1,test=0.1"), gap=25)  # 160 and 170 are both within 25 of 180
    splits, dropped = split_frames(frames, parse_split("val=0.25"), gap=0)
    assert splits["val"] == [150, 160, 170, 180, 190] and splits["test"] == [] and dropped == []
    with pytest.raises(DataFormatError, match="--split-gap 500: leaves no train frames"):
        split_frames(frames, parse_split("val=0.1"), gap=500)
    with pytest.raises(DataFormatError, match="unknown split 'tset'"):
        parse_split("tset=0.1")


def test_mask_image_folders_equal_mask_videos(recording, imported, tmp_path):
    masks = tmp_path / "masks"
    for camera in range(6):
        (masks / str(camera)).mkdir(parents=True)
        source = VideoSource.single(recording / "mammal" / mammal.MASKS / f"{camera}.mp4")
        for index, mask in source.frames([0, 1], gray=True):
            Image.fromarray(mask).save(masks / str(camera) / f"{index:06d}.png")
    out = tmp_path / "out"
    assert (
        import_main(
            [
                "mammal",
                str(recording / "mammal"),
                "--out",
                str(out),
                "--masks",
                str(masks),
                "--frames",
                "0:2",
                "--split",
                "",
                "--scale",
                "0.5",
                "--workers",
                "1",
                "--no-check",
            ]
        )
        == 0
    )
    for camera in range(6):
        from_folder = np.asarray(Image.open(out / "frame_000001" / "images" / f"cam_{camera:03d}.png"))
        from_video = np.asarray(Image.open(imported["mammal"] / "frame_000001" / "images" / f"cam_{camera:03d}.png"))
        np.testing.assert_array_equal(from_folder, from_video)


def test_an_error_in_a_worker_stops_the_import_with_one_line(recording, tmp_path, capsys):
    """Mask image folders are only read by the per-camera workers (2 processes here): a missing mask image there
    still ends the import with one line."""
    masks = tmp_path / "masks"
    for camera in range(6):
        (masks / str(camera)).mkdir(parents=True)
        for index in range(3 if camera != 4 else 2):
            Image.fromarray(np.zeros((HEIGHT, WIDTH), np.uint8)).save(masks / str(camera) / f"{index}.png")
    code, err = run_import(
        capsys,
        "mammal",
        recording / "mammal",
        "--out",
        tmp_path / "out",
        "--masks",
        masks,
        "--frames",
        "0:3",
        "--split",
        "",
        "--workers",
        "2",
    )
    assert code == 2 and err.splitlines()[-1] == f"error: {masks / '4'}: no mask image for frame 2"
    assert not (tmp_path / "out" / "frame_000002" / "opencv_cameras.json").exists()


def test_without_masks_images_are_rgb(recording, tmp_path):
    src = copy_of(recording, "mammal", tmp_path)
    shutil.rmtree(src / mammal.MASKS)
    out = tmp_path / "out"
    assert (
        import_main(
            [
                "mammal",
                str(src),
                "--out",
                str(out),
                "--frames",
                "0:2",
                "--split",
                "",
                "--workers",
                "1",
                "--views",
                "4,0",
                "--no-check",
            ]
        )
        == 0
    )
    image = np.asarray(Image.open(out / "frame_000000" / "images" / "cam_000.png"))
    assert image.shape == (HEIGHT, WIDTH, 3)
    info = json.loads((out / "import_info.json").read_text())
    assert [v["camera"] for v in info["views"]] == ["4", "0"] and "no masks" in info["notes"][-1]


def test_resume_skips_written_frames_and_refuses_other_options(recording, tmp_path, capsys):
    out = tmp_path / "out"
    args = [
        "dannce",
        str(recording / "dannce"),
        "--out",
        str(out),
        "--frames",
        "0:6",
        "--split",
        "val=0.2",
        "--split-gap",
        "0",
        "--workers",
        "1",
        "--no-check",
    ]
    assert import_main(args) == 0
    image = out / "frame_000002" / "images" / "cam_003.png"
    original = image.read_bytes()
    (out / "frame_000002" / "opencv_cameras.json").unlink()  # as if killed before the frame was complete
    image.unlink()
    untouched = out / "frame_000004" / "images" / "cam_000.png"
    stamp = untouched.stat().st_mtime_ns
    assert import_main(args) == 0
    info = json.loads((out / "import_info.json").read_text())
    assert info["written_this_run"] == 1 and info["complete"]
    assert image.read_bytes() == original and untouched.stat().st_mtime_ns == stamp
    assert (out / "frame_000002" / "opencv_cameras.json").is_file()
    code, err = run_import(capsys, *args[:-1], "--scale", "0.5")
    assert code == 2 and "import_info.json: options:" in err and "scale" in err and err.count("\n") == 0
    code, err = run_import(capsys, *args[:-1], "--focal-scale", "0.8")
    assert code == 2 and "other focal_scale;" in err
    info = json.loads((out / "import_info.json").read_text())
    del info["options"]["focal_scale"]  # as an import made before --focal-scale existed wrote it
    (out / "import_info.json").write_text(json.dumps(info))
    assert import_main(args) == 0


def test_chunked_videos_read_as_one_stream(recording, tmp_path):
    """DANNCE chunks named by their first frame decode as one video, frame numbers continuing across chunks."""
    single = VideoSource.single(recording / "dannce" / "videos" / "Camera1" / "0.mp4")
    decoded = dict(single.frames(range(FRAMES)))
    for start, stop in ((0, 8), (8, FRAMES)):
        with VideoWriter(tmp_path / f"{start}.mp4", quality=0) as writer:  # lossless re-encode
            for index in range(start, stop):
                writer.write(decoded[index])
    chunks = VideoSource(((0, tmp_path / "0.mp4"), (8, tmp_path / "8.mp4")))
    assert chunks.info().frames == FRAMES
    got = dict(chunks.frames([3, 8, 19]))
    assert sorted(got) == [3, 8, 19]
    for index, frame in got.items():
        assert np.abs(frame.astype(int) - decoded[index]).mean() < 1.0
    with pytest.raises(DataFormatError, match=r"has 20 frames, but frame 25 was asked for"):
        list(chunks.frames([2, 25]))


# --- bad input: one line naming the file and the field ------------------------------------------------------


def test_missing_video(recording, tmp_path, capsys):
    src = copy_of(recording, "mammal", tmp_path)
    (src / "videos_undist" / "3.mp4").unlink()
    code, err = run_import(capsys, "mammal", src, "--out", tmp_path / "out")
    assert code == 2 and "videos_undist/3.mp4: video for camera 3 of" in err and err.count("\n") == 0


def test_missing_camera(recording, tmp_path, capsys):
    code, err = run_import(capsys, "anipose", recording / "anipose", "--out", tmp_path / "out", "--views", "A,G")
    assert code == 2 and "calibration.toml: camera 'G': not in the calibration (cameras: A, B, C, D, E, F)" in err
    src = copy_of(recording, "dannce", tmp_path)
    (src / "calibration" / "hires_cam3_params.mat").unlink()
    code, err = run_import(capsys, "dannce", src, "--out", tmp_path / "out2")
    assert code == 2 and "camera 3: hires_cam3_params.mat missing" in err


def test_video_shorter_than_the_frames_asked_for(recording, tmp_path, capsys):
    code, err = run_import(capsys, "mammal", recording / "mammal", "--out", tmp_path / "out", "--frames", "10:30:5")
    assert code == 2 and "0.mp4: the video has 20 frames, but frame 25 was asked for (--frames)" in err
    assert not (tmp_path / "out").exists()  # checked before anything is written
    src = copy_of(recording, "mammal", tmp_path)
    with VideoWriter(src / mammal.MASKS / "2.mp4") as writer:  # a mask video cut short
        for _ in range(12):
            writer.write(np.zeros((HEIGHT, WIDTH), np.uint8))
    code, err = run_import(capsys, "mammal", src, "--out", tmp_path / "out", "--frames", "0:15")
    assert code == 2 and "simpleclick_undist/2.mp4: the video has 12 frames, but frame 14 was asked for" in err


def test_non_rotation_R(recording, tmp_path, capsys):
    src = copy_of(recording, "mammal", tmp_path)
    cameras = pickle.loads((src / "new_cam.pkl").read_bytes())
    cameras[2]["R"] = cameras[2]["R"] * 1.1
    (src / "new_cam.pkl").write_bytes(pickle.dumps(cameras))
    code, err = run_import(capsys, "mammal", src, "--out", tmp_path / "out")
    assert code == 2 and "new_cam.pkl: [2].R: not a rotation matrix (max |R^T R - I| = 0.21)" in err


def test_video_size_disagrees_with_calibration(recording, tmp_path, capsys):
    src = copy_of(recording, "anipose", tmp_path)
    toml = src / "calibration.toml"
    toml.write_text(toml.read_text().replace("size = [288, 256]", "size = [1152, 1024]", 1))
    code, err = run_import(capsys, "anipose", src, "--out", tmp_path / "out")
    assert code == 2 and "rec-camA.mp4: size 288x256 disagrees with" in err and "camera 'A': size 1152x1024" in err
    # MAMMAL states no size: a calibration for 4x larger frames puts the principal point outside the video
    src = copy_of(recording, "mammal", tmp_path)
    cameras = pickle.loads((src / "new_cam.pkl").read_bytes())
    cameras[0]["K"] = cameras[0]["K"] * [[4], [4], [1]]
    (src / "new_cam.pkl").write_bytes(pickle.dumps(cameras))
    code, err = run_import(capsys, "mammal", src, "--out", tmp_path / "out")
    assert code == 2 and "0.mp4: size 288x256 disagrees with" in err and "principal point (574.0, 510.0)" in err


def test_camera_without_video(recording, tmp_path, capsys):
    src = copy_of(recording, "anipose", tmp_path)
    (src / "videos-raw" / "rec-camC.mp4").unlink()
    code, err = run_import(capsys, "anipose", src, "--out", tmp_path / "out")
    assert code == 2 and "videos-raw: no video for camera 'C' of" in err
    src = copy_of(recording, "dannce", tmp_path)
    shutil.rmtree(src / "videos" / "Camera5")
    code, err = run_import(capsys, "dannce", src, "--out", tmp_path / "out")
    assert code == 2 and "videos/Camera5: video for camera Camera5 of" in err


def test_video_without_camera(recording, tmp_path, capsys):
    src = copy_of(recording, "mammal", tmp_path)
    shutil.copy(src / "videos_undist" / "0.mp4", src / "videos_undist" / "6.mp4")
    code, err = run_import(capsys, "mammal", src, "--out", tmp_path / "out")
    assert code == 2 and "videos_undist/6.mp4: a video with no camera in" in err and "(6 cameras: 0..5)" in err
    src = copy_of(recording, "anipose", tmp_path)
    shutil.copy(src / "videos-raw" / "rec-camA.mp4", src / "videos-raw" / "rec-camG.mp4")
    code, err = run_import(capsys, "anipose", src, "--out", tmp_path / "out")
    assert code == 2 and "rec-camG.mp4: a video with no camera in" in err


def test_malformed_calibration_fields(recording, tmp_path, capsys):
    src = copy_of(recording, "anipose", tmp_path)
    toml = src / "calibration.toml"
    original = toml.read_text()
    toml.write_text(original.replace("[cam_1]\n", "[cam_1]\nfisheye = true\n"))  # with 5 coefficients
    code, err = run_import(capsys, "anipose", src, "--out", tmp_path / "out")
    assert code == 2 and "calibration.toml: [cam_1].distortions: a fisheye calibration has 4 coefficients" in err
    toml.write_text(original.replace("[cam_1]\n", '[cam_1]\nfisheye = "yes"\n'))
    code, err = run_import(capsys, "anipose", src, "--out", tmp_path / "out")
    assert code == 2 and "calibration.toml: [cam_1].fisheye: expected true or false, got 'yes'" in err
    src = copy_of(recording, "mammal", tmp_path)
    cameras = pickle.loads((src / "new_cam.pkl").read_bytes())
    del cameras[4]["T"]
    (src / "new_cam.pkl").write_bytes(pickle.dumps(cameras))
    code, err = run_import(capsys, "mammal", src, "--out", tmp_path / "out")
    assert code == 2 and "new_cam.pkl: [4].T: missing" in err
    (src / "new_cam.pkl").write_bytes(
        pickle.dumps([{"K": np.eye(3), "R": np.eye(3), "T": np.zeros(3), "x": Counter()}])
    )
    code, err = run_import(capsys, "mammal", src, "--out", tmp_path / "out")
    assert code == 2 and "refusing to load" in err


def test_anipose_file_as_aniposelib_writes_it(tmp_path):
    """aniposelib's toml dump: trailing commas, integer sizes, a [metadata] table."""
    (tmp_path / "calibration.toml").write_text(
        '[cam_0]\nname = "A"\nsize = [ 1152, 1024,]\n'
        "matrix = [ [ 1200.5, 0.0, 575.5,], [ 0.0, 1201.0, 511.5,], [ 0.0, 0.0, 1.0,],]\n"
        "distortions = [ -0.1, 0.05, 0.001, -0.002, 0.0,]\nrotation = [ 0.0, 1.5707963267948966, 0.0,]\n"
        "translation = [ 10.0, -20.0, 300.0,]\n\n[metadata]\nadjusted = true\nerror = 0.41\n"
    )
    (camera,) = anipose.read_calibration(tmp_path / "calibration.toml")
    assert camera.name == "A" and camera.size == (1152, 1024)
    np.testing.assert_allclose(camera.R, [[0, 0, 1], [0, 1, 0], [-1, 0, 0]], atol=1e-12)  # 90 deg about y
    np.testing.assert_allclose(camera.dist, [-0.1, 0.05, 0.001, -0.002, 0.0])
    np.testing.assert_allclose(camera.fxfycxcy(), [1200.5, 1201.0, 576.0, 512.0])  # +0.5: gslrm's pixel centres
