"""Real rig calibration files: skewed MATLAB cameras undistorted exactly, DANNCE's Label3D ``params`` cells and
aniposelib's TOML read and checked against each tool's own projection, and anipose's ``cam_regex``."""

import numpy as np
import pytest
from scipy.io import savemat

from gslrm.data.format import DataFormatError
from gslrm.data.recordings import anipose, dannce
from gslrm.data.recordings.camera import RigCamera, frame_kept, pinhole_positions, undistortion_maps

# K with skew s = -5 and k1 = -0.1 (OpenCV's pixel convention). By hand, for the pinhole pixel (776, 612):
# x = (776 - 576) / 1000 = 0.2, y = (612 - 512) / 1010 = 0.0990099; r^2 = 0.0498030, 1 + k1 r^2 = 0.9950197;
# x_d = 0.1990039, y_d = 0.0985168; u = 1000 x_d - 5 y_d + 576 = 774.51136, v = 1010 y_d + 512 = 611.50197.
SKEWED = RigCamera(
    "skewed",
    np.array([[1000.0, -5.0, 576.0], [0.0, 1010.0, 512.0], [0.0, 0.0, 1.0]]),
    np.eye(3),
    np.zeros(3),
    np.array([-0.1, 0.0, 0.0, 0.0, 0.0]),
    (1152, 1024),
)
BY_HAND = (774.5113567782619, 611.5019703950593)


def test_skewed_distorted_map_known_answer():
    map_x, map_y = undistortion_maps(SKEWED, 1152, 1024)
    assert map_x[612, 776] == pytest.approx(BY_HAND[0], abs=1e-3) and map_y[612, 776] == pytest.approx(
        BY_HAND[1], abs=1e-3
    )
    # without the skew term the source is 0.4926 px to the right: the error this fixes (s y_d = -5 x 0.0985)
    unskewed = RigCamera("u", SKEWED.pinhole_K(), np.eye(3), np.zeros(3), SKEWED.dist, (1152, 1024))
    assert undistortion_maps(unskewed, 1152, 1024)[0][612, 776] - map_x[612, 776] == pytest.approx(0.49258, abs=1e-3)
    # the inverse, to the solver's precision
    np.testing.assert_allclose(pinhole_positions(SKEWED, [BY_HAND]), [[776.0, 612.0]], atol=1e-8)


def test_skew_alone_is_a_shear_of_x_by_y():
    sheared = RigCamera(
        "s",
        np.array([[800.0, 4.0, 400.0], [0.0, 800.0, 300.0], [0.0, 0.0, 1.0]]),
        np.eye(3),
        np.zeros(3),
        np.zeros(5),
        (800, 600),
    )
    assert not sheared.is_pinhole
    map_x, map_y = undistortion_maps(sheared, 800, 600)
    rows = np.arange(600, dtype=np.float64)[:, None]
    np.testing.assert_allclose(map_x, np.arange(800)[None, :] + 4.0 * (rows - 300.0) / 800.0, atol=1e-3)
    np.testing.assert_allclose(map_y, np.broadcast_to(rows, (600, 800)), atol=1e-4)
    kept, _ = frame_kept(sheared, 800, 600)  # the sheared corners (+-1.5 px) fall outside the pinhole view
    assert 0.9 < kept < 1.0


def matlab_projection(X, K_matlab, r, t, radial, tangential):
    """DANNCE's own projection (MATLAB's model, row vectors, 1-based pixels), written out here independently of
    gslrm: [X 1][r; t] gives camera coordinates; normalize; k1 k2 [k3] radial and p1 p2 tangential distortion;
    u = fx x_d + s y_d + cx, v = fy y_d + cy with K_matlab = [[fx, 0, 0], [s, fy, 0], [cx, cy, 1]]."""
    camera = X @ r + t
    x, y = camera[:, 0] / camera[:, 2], camera[:, 1] / camera[:, 2]
    k = np.pad(np.asarray(radial, dtype=np.float64), (0, 3 - len(radial)))
    p1, p2 = tangential
    r2 = x * x + y * y
    radial_factor = 1 + k[0] * r2 + k[1] * r2**2 + k[2] * r2**3
    xd = x * radial_factor + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial_factor + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    fx, s, fy, cx, cy = K_matlab[0, 0], K_matlab[1, 0], K_matlab[1, 1], K_matlab[2, 0], K_matlab[2, 1]
    return np.stack([fx * xd + s * yd + cx, fy * yd + cy], -1), np.stack([x, y], -1)


def label3d_params(count=3):
    """Label3D's ``params``: a cell array of structs K, RDistort, TDistort, r, t (MATLAB's transposed forms);
    skews and distortions like a real 1152x1024 mouse rig's."""
    rng = np.random.default_rng(11)
    params, truth = [], []
    for index in range(count):
        angle = rng.uniform(-0.4, 0.4, 3)
        import cv2

        R = cv2.Rodrigues(angle)[0]
        t = np.array([rng.uniform(-30, 30), rng.uniform(-30, 30), rng.uniform(280, 360)])
        K_matlab = np.array(
            [
                [1400.0 + 20 * index, 0, 0],
                [(-5.9, 1.4, -0.9)[index], 1405.0 - 10 * index, 0],
                [577.3 + index, 513.1 - index, 1.0],
            ]
        )
        radial = np.array([-0.11 + 0.01 * index, 0.09, -0.02])
        tangential = np.array([0.0011, -0.0007 + 0.0002 * index])
        params.append({"K": K_matlab, "RDistort": radial[None], "TDistort": tangential[None], "r": R.T, "t": t[None]})
        truth.append((K_matlab, R.T, t, radial, tangential))
    cells = np.empty((count, 1), dtype=object)
    for index, entry in enumerate(params):
        cells[index, 0] = entry
    names = np.empty((1, count), dtype=object)
    for index in range(count):
        names[0, index] = f"Camera{index + 1}"
    return {"params": cells, "camnames": names}, truth


def test_label3d_file_reprojects_as_dannce_projects(tmp_path):
    variables, truth = label3d_params()
    savemat(str(tmp_path / "label3d_dannce.mat"), variables)
    _, cameras = dannce.read_calibration(tmp_path)
    assert [c.name for c in cameras] == ["Camera1", "Camera2", "Camera3"]
    rng = np.random.default_rng(3)
    X = rng.uniform(-40, 40, (200, 3))
    for camera, (K_matlab, r, t, radial, tangential) in zip(cameras, truth, strict=True):
        assert camera.K[0, 1] == K_matlab[1, 0] != 0  # the skew is kept
        recorded, normalized = matlab_projection(X, K_matlab, r, t, radial, tangential)
        inside = (recorded > 0).all(1) & (recorded[:, 0] < 1152) & (recorded[:, 1] < 1024)
        assert inside.sum() > 150
        # the tool's pixel (1-based) through our camera: where the ray lands in the pinhole image we write
        fx, fy, cx, cy = camera.pinhole_K()[[0, 1, 0, 1], [0, 1, 2, 2]]
        expected = np.stack([fx * normalized[:, 0] + cx, fy * normalized[:, 1] + cy], -1)
        ours = pinhole_positions(camera, recorded - 1.0)
        assert np.abs(ours - expected)[inside].max() < 1e-6
        # and the resampling map reads each written pixel from where DANNCE projects its ray (float32 maps)
        map_x, map_y = undistortion_maps(camera, 1152, 1024)
        pixel = np.round(expected[inside]).astype(int)
        pixel = pixel[(pixel >= 0).all(1) & (pixel[:, 0] < 1152) & (pixel[:, 1] < 1024)]
        rays = (pixel - camera.pinhole_K()[:2, 2]) / [fx, fy]
        points = np.concatenate([rays, np.ones((len(rays), 1))], 1) * 300.0
        world = (points - t) @ r.T  # camera -> world, row-vector form of R^T (p - t)
        source, _ = matlab_projection(world, K_matlab, r, t, radial, tangential)
        np.testing.assert_allclose(map_x[pixel[:, 1], pixel[:, 0]], source[:, 0] - 1.0, atol=2e-3)
        np.testing.assert_allclose(map_y[pixel[:, 1], pixel[:, 0]], source[:, 1] - 1.0, atol=2e-3)


def test_one_dannce_point_by_hand(tmp_path):
    """The hand-computed point above, as a Label3D file states it (1-based: cx 577, cy 513)."""
    K_matlab = np.array([[1000.0, 0, 0], [-5.0, 1010.0, 0], [577.0, 513.0, 1.0]])
    cells = np.empty((1, 1), dtype=object)
    cells[0, 0] = {
        "K": K_matlab,
        "RDistort": np.array([[-0.1, 0.0]]),
        "TDistort": np.array([[0.0, 0.0]]),
        "r": np.eye(3),
        "t": np.zeros((1, 3)),
    }
    names = np.empty((1, 1), dtype=object)
    names[0, 0] = "Camera1"
    savemat(str(tmp_path / "label3d_dannce.mat"), {"params": cells, "camnames": names})
    _, (camera,) = dannce.read_calibration(tmp_path)
    np.testing.assert_allclose(camera.K, SKEWED.K, atol=1e-12)
    X = np.array([[200.0, 100.0 / 1010.0 * 1000.0, 1000.0]])
    recorded, _ = matlab_projection(X, K_matlab, np.eye(3), np.zeros(3), [-0.1, 0.0], [0.0, 0.0])
    np.testing.assert_allclose(recorded[0] - 1.0, BY_HAND, atol=1e-9)
    np.testing.assert_allclose(pinhole_positions(camera, recorded - 1.0), [[776.0, 612.0]], atol=1e-8)


ANIPOSELIB_TOML = """[cam_0]
name = "A"
size = [ 1152, 1024,]
matrix = [ [ 1391.2841, 0.0, 571.8314,], [ 0.0, 1392.7712, 518.2045,], [ 0.0, 0.0, 1.0,],]
distortions = [ -0.1183, 0.1472, 0.0011, -0.0009, -0.0526,]
rotation = [ 0.3121, -1.2043, 0.1887,]
translation = [ 12.31, -40.52, 341.9,]

[cam_1]
name = "B"
size = [ 1152, 1024,]
matrix = [ [ 1402.5513, 0.0, 580.2219,], [ 0.0, 1401.9031, 509.7763,], [ 0.0, 0.0, 1.0,],]
distortions = [ -0.1042, 0.0897, -0.0004, 0.0013, 0.0118,]
rotation = [ -0.0911, 0.8234, -0.0427,]
translation = [ -8.77, -35.02, 355.4,]

[metadata]
adjusted = true
error = 0.3872
"""


def test_aniposelib_toml_reprojects_as_aniposelib_projects(tmp_path):
    """aniposelib projects with cv2.projectPoints(X, rvec, tvec, matrix, distortions): our camera read from its
    TOML must put the same rays at the same pinhole pixels (all five coefficients)."""
    import cv2

    (tmp_path / "calibration.toml").write_text(ANIPOSELIB_TOML)
    cameras = anipose.read_calibration(tmp_path / "calibration.toml")
    X = np.random.default_rng(5).uniform(-40, 40, (200, 3))
    for camera, table in zip(cameras, ("cam_0", "cam_1"), strict=True):
        import tomllib

        entry = tomllib.loads(ANIPOSELIB_TOML)[table]
        matrix, dist = np.array(entry["matrix"]), np.array(entry["distortions"])
        rvec, tvec = np.array(entry["rotation"]), np.array(entry["translation"])
        recorded = cv2.projectPoints(X, rvec, tvec, matrix, dist)[0].reshape(-1, 2)
        camera_points = X @ cv2.Rodrigues(rvec)[0].T + tvec
        pinhole = cv2.projectPoints(X, rvec, tvec, matrix, None)[0].reshape(-1, 2)
        inside = (recorded > 0).all(1) & (recorded[:, 0] < 1152) & (recorded[:, 1] < 1024) & (camera_points[:, 2] > 0)
        assert inside.sum() > 150
        assert np.abs(pinhole_positions(camera, recorded) - pinhole)[inside].max() < 1e-6


# -- anipose's cam_regex ----------------------------------------------------------------------------------------


def anipose_project(tmp_path, video_stems, config=None):
    from gslrm.data.recordings.video import VideoWriter

    src = tmp_path / "project" / "session1"
    (src / "videos-raw").mkdir(parents=True)
    cameras = [RigCamera(n, SKEWED.pinhole_K(), np.eye(3), np.zeros(3), np.zeros(5), (32, 32)) for n in "AB"]
    anipose.write_calibration(src / "calibration.toml", cameras)
    for stem in video_stems:
        with VideoWriter(src / "videos-raw" / f"{stem}.mp4", 10) as writer:
            writer.write(np.zeros((32, 32, 3), np.uint8))
    if config is not None:
        (tmp_path / "project" / "config.toml").write_text(config)
    return src


def test_cam_regex_from_the_project_config(tmp_path):
    src = anipose_project(tmp_path, ["rec1_view-1", "rec1_view-2"], "[triangulation]\ncam_regex = '_view-([0-9])$'\n")
    # the project's regex names cameras 1 and 2, the calibration A and B: the camera, the regex and its file named
    with pytest.raises(
        DataFormatError, match=r"no video for camera 'A' .*cam_regex '_view-\(\[0-9\]\)\$' \(.*project/config\.toml\)"
    ):
        anipose.read(src)


def test_cam_regex_option_matches_videos_and_names_a_miss(tmp_path):
    src = anipose_project(tmp_path, ["take-1 CAMERA_A", "take-1 CAMERA_B"])
    recording = anipose.read(src, cam_regex=r"CAMERA_([A-Z])$")
    assert [v.describe().split("/")[-1] for v in recording.videos] == ["take-1 CAMERA_A.mp4", "take-1 CAMERA_B.mp4"]
    with pytest.raises(
        DataFormatError,
        match=r"take-1 CAMERA_A\.mp4: the video's name does not match cam_regex '-cam\(\[A-Z\]\)\$' \(--cam-regex\)",
    ):
        anipose.read(src, cam_regex=r"-cam([A-Z])$")
    with pytest.raises(DataFormatError, match="has no group"):
        anipose.read(src, cam_regex=r"CAMERA_[A-Z]$")


def test_cam_regex_default_naming_still_matches_without_a_config(tmp_path):
    src = anipose_project(tmp_path, ["rec-camA", "rec-camB"])
    assert anipose.find_cam_regex(src) is None
    assert len(anipose.read(src).videos) == 2
    (tmp_path / "project" / "config.toml").write_text("[triangulation]\ncam_regex = '-cam([A-Z])$'\n")
    assert anipose.find_cam_regex(src) == ("-cam([A-Z])$", (tmp_path / "project" / "config.toml").resolve())
    assert len(anipose.read(src).videos) == 2
