"""The browser viewer: splat conversion by hand, camera conventions, the entry point, the training callback, and
the page itself in headless Chromium (tests/browser.py)."""

from __future__ import annotations

import math
import os
import time
import urllib.request

import numpy as np
import pytest
import torch
import warm_python
from cli import TRAINED_IMAGE_SIZE, data_overrides
from conftest import skip_or_fail
from gsplat.cuda._torch_impl import _quat_to_rotmat

from gslrm.model.gaussians import Gaussians, save_ply
from gslrm.view.splats import camera_to_opencv, matrix_to_quat, nearest_camera, to_splats

viser = pytest.importorskip("viser", reason="the viewer extra is not installed (pip install -e .[viewer])")


def gaussians_of(means, scales, quats, opacities, colour=0.0) -> Gaussians:
    n = len(means)
    return Gaussians(
        means=torch.tensor(means, dtype=torch.float32)[None],
        features=torch.full((1, n, 1, 3), colour),
        scales=torch.tensor(scales, dtype=torch.float32)[None],
        quats=torch.tensor(quats, dtype=torch.float32)[None],
        opacities=torch.tensor(opacities, dtype=torch.float32)[None],
    )


def test_covariance_is_r_s_squared_r_transposed_by_hand():
    half = math.sqrt(0.5)
    g = gaussians_of([[0, 0, 0], [1, 2, 3]], [[1, 2, 3], [1, 2, 3]], [[1, 0, 0, 0], [half, 0, 0, half]], [0.5, 0.5])
    splats = to_splats(g, min_opacity=0.0, max_splats=10)
    np.testing.assert_allclose(splats.covariances[0], np.diag([1.0, 4.0, 9.0]), atol=1e-6)
    # 90 degrees about z: x -> y, so the variances along x and y swap
    np.testing.assert_allclose(splats.covariances[1], np.diag([4.0, 1.0, 9.0]), atol=1e-6)
    np.testing.assert_allclose(splats.centers[1], [1, 2, 3])
    # colour: the degree-0 SH term, C0 * 0 + 0.5
    np.testing.assert_allclose(splats.rgbs, 0.5)


def test_threshold_then_the_most_opaque_up_to_max_splats():
    g = gaussians_of([[i, 0, 0] for i in range(5)], [[0.1] * 3] * 5, [[1, 0, 0, 0]] * 5, [0.1, 0.5, 0.9, 0.01, 0.7])
    splats = to_splats(g, min_opacity=0.05, max_splats=2)
    assert splats.total == 5 and len(splats) == 2
    assert sorted(splats.opacities[:, 0].tolist()) == pytest.approx([0.7, 0.9])
    assert sorted(splats.centers[:, 0].tolist()) == [2.0, 4.0]
    assert len(to_splats(g, min_opacity=0.95, max_splats=2)) == 0


def test_quaternion_round_trip_every_branch():
    from scipy.spatial.transform import Rotation

    rotations = Rotation.random(50, random_state=0).as_matrix().tolist()
    rotations += [np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])]  # 180 degrees: trace -1
    for rotation in rotations:
        back = _quat_to_rotmat(torch.tensor(matrix_to_quat(np.array(rotation)), dtype=torch.float64)).numpy()
        np.testing.assert_allclose(back, rotation, atol=1e-9)


def test_browser_camera_is_our_renderers_camera():
    from gslrm.cameras import turntable_cameras

    c2w, _ = turntable_cameras(4, resolution=64, radius=2.7, elevation_deg=20.0)
    fov = 0.8
    c2w_back, k = camera_to_opencv(matrix_to_quat(c2w[1, :3, :3].numpy()), c2w[1, :3, 3].numpy(), fov, 96, 64)
    torch.testing.assert_close(c2w_back, c2w[1].float(), atol=1e-5, rtol=0)
    assert k.tolist() == pytest.approx([32 / math.tan(0.4), 32 / math.tan(0.4), 48.0, 32.0])
    assert nearest_camera(c2w[2].float() * torch.tensor(1.0), c2w.float()) == 2


def _view_config(rodent_root, trained_run, *overrides):
    from conftest import compose

    checkpoint = trained_run / "checkpoints" / "last.ckpt"
    size = f"data.image_size={TRAINED_IMAGE_SIZE}"
    return compose("view", f"ckpt_path={checkpoint}", "port=0", *data_overrides(rodent_root), size, *overrides)


def _bounding_box(viewer, client, centres: np.ndarray, scales: float) -> tuple[int, int, int, int]:
    """Pixel box of ``centres`` seen from the browser's camera, grown by 3 sigma of the largest splat."""
    c2w, k = camera_to_opencv(
        client.camera.wxyz,
        client.camera.position,
        client.camera.fov,
        client.camera.image_width,
        client.camera.image_height,
    )
    w2c = torch.linalg.inv(c2w.double()).numpy()
    camera = centres @ w2c[:3, :3].T + w2c[:3, 3]
    assert (camera[:, 2] > 0).all()
    k = k.double().numpy()
    u, v = k[0] * camera[:, 0] / camera[:, 2] + k[2], k[1] * camera[:, 1] / camera[:, 2] + k[3]
    margin = 3 * scales * k[1] / camera[:, 2].min() + 3
    return (
        int(u.min() - margin),
        int(v.min() - margin),
        int(math.ceil(u.max() + margin)),
        int(math.ceil(v.max() + margin)),
    )


@pytest.mark.browser
@pytest.mark.slow
def test_page_in_headless_chromium_shows_the_prediction_where_it_projects(tmp_path, rodent_root, trained_run):
    from gslrm.view.browser import HeadlessChromium, find_chromium

    if find_chromium() is None:
        skip_or_fail("chromium is not installed (apt-get install -y chromium)")
    view_main = pytest.importorskip("gslrm.view.__main__")
    cfg = _view_config(rodent_root, trained_run, "viewer.show_cameras=false")
    viewer = view_main.build_viewer(cfg)
    browser = HeadlessChromium(tmp_path / "profile", width=960, height=720).start()
    try:
        assert any(browser.temp_dir.glob("org.chromium.Chromium.*"))  # its temporary folders, not in /tmp itself
        started = time.monotonic()
        browser.open(viewer.url)
        deadline = time.monotonic() + 60
        while not viewer.server.get_clients() and time.monotonic() < deadline:
            time.sleep(0.2)
        (client,) = viewer.server.get_clients().values()
        time.sleep(2)
        browser.dismiss_notifications()
        with_splats = browser.settled_screenshot()
        first_splat_s = time.monotonic() - started
        shown = viewer.splats
        assert len(shown) > 100
        scale = float(viewer.scene.gaussians.scales[0, viewer.scene.gaussians.opacities[0] > 0.02].max())
        left, top, right, bottom = _bounding_box(viewer, client, shown.centers.astype(np.float64), scale)

        viewer.set_threshold(0.99)
        assert len(viewer.splats) == 0
        empty = browser.settled_screenshot(changed_from=with_splats)
        changed = np.abs(with_splats - empty).max(axis=-1) > 24
        inside = np.zeros_like(changed)
        inside[max(top, 0) : max(bottom, 0), max(left, 0) : max(right, 0)] = True
        assert changed[inside].mean() > 0.05, changed[inside].mean()  # the prediction is drawn inside its box
        assert changed[~inside].sum() <= 0.001 * (~inside).sum(), changed[~inside].sum()  # and nowhere else
        # where nothing is drawn the page is the background colour (white), GUI panel aside
        assert (empty[~inside].reshape(-1, 3) == 255).all(axis=-1).mean() > 0.8

        median = float(np.median(shown.opacities))
        viewer.set_threshold(median)
        assert 0 < len(viewer.splats) < len(shown)
        thinned = browser.settled_screenshot(changed_from=empty)
        assert np.abs(thinned - with_splats).max(axis=-1).__gt__(24).sum() > 50  # a threshold change is visible

        result = viewer.render_view(client)  # the "render this view" button's work
        assert result["render"].shape == (3, 256, round(256 * 960 / 720)) and float(result["alpha"].max()) > 0.1
        assert result["nearest"] is not None and result["ground_truth"].shape == (3, 16, 16)
        from PIL import Image

        Image.fromarray(with_splats.astype(np.uint8)).save(tmp_path / "viewer.png")
        print(f"first splat on screen {first_splat_s:.1f} s after the page was opened")
    finally:
        browser.stop()
        viewer.stop()
    assert not browser.temp_dir.exists()  # and removed on stop


def _sequence_store(tmp_path, rodent_root, trained_run):
    """predict.py's store of the trained fixture over the rodent data's 4 samples (each its own pose)."""
    from conftest import compose

    from predict import predict

    out = tmp_path / "sequence"
    cfg = compose(
        "predict",
        f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}",
        *data_overrides(rodent_root),
        f"data.image_size={TRAINED_IMAGE_SIZE}",
        f"predict.out={out}",
        "predict.num_workers=0",
        f"paths.output_dir={tmp_path / 'predict_run'}",
    )
    assert predict(cfg)["complete"]
    return out


def test_sequence_in_headless_chromium_scrubbing_and_playing_change_the_picture(tmp_path, rodent_root, trained_run):
    """python -m gslrm.view sequence=<store>: frame 0 with its 6 cameras and their photographs; moving the time
    slider reads that frame and changes what is drawn; "play" advances on its own."""
    from conftest import compose
    from PIL import Image

    from gslrm.data.format import read_cameras
    from gslrm.session.store import SequenceStore
    from gslrm.view.browser import HeadlessChromium, find_chromium

    if find_chromium() is None:
        skip_or_fail("chromium is not installed (apt-get install -y chromium)")
    view_main = pytest.importorskip("gslrm.view.__main__")
    store = _sequence_store(tmp_path, rodent_root, trained_run)
    viewer = view_main.build_viewer(compose("view", f"sequence={store}", "port=0", "fps=20"))
    browser = HeadlessChromium(tmp_path / "profile", width=960, height=720).start()
    try:
        browser.open(viewer.url)
        deadline = time.monotonic() + 60
        while not viewer.server.get_clients() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)
        browser.dismiss_notifications()
        first = browser.settled_screenshot()
        assert viewer.frame == 0 and len(viewer.splats) > 100 and len(viewer._camera_handles) == 6
        assert viewer.scene.c2w.shape == (6, 4, 4) and viewer.scene.num_inputs == 4
        stored = SequenceStore(store).read_frame(0)
        assert viewer.splats.total == stored["count"]  # the stored frame, all of it

        viewer.frame_slider.value = 3  # as the slider does when dragged: frame 3 is read and drawn
        assert viewer.frame == 3 and "frame 3" in viewer.status.content
        sample = rodent_root / SequenceStore(store).group().attrs["samples"][3]
        camera = read_cameras(sample / "opencv_cameras.json")[0]
        with Image.open(sample / camera.file_path) as photo:
            width = round(camera.width * 128 / camera.height)  # 128 px high, the photograph's aspect
            expected = np.asarray(photo.convert("RGBA").resize((width, 128), Image.BILINEAR), np.float32) / 255
        expected = expected[..., :3] * expected[..., 3:] + (1 - expected[..., 3:])
        assert np.abs(viewer.scene.images[0, :3].permute(1, 2, 0).numpy() - expected).max() < 1e-5
        scrubbed = browser.settled_screenshot(changed_from=first)
        assert (np.abs(scrubbed - first).max(axis=-1) > 24).sum() > 200  # another pose on screen

        viewer.play.value = True  # 20 fps: frames advance (and wrap) on their own
        deadline = time.monotonic() + 30
        while viewer.frame == 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        viewer.play.value = False
        assert viewer.frame in (4, 0, 1, 2), viewer.frame
    finally:
        browser.stop()
        viewer.stop()


@pytest.mark.slow  # starts a Python process (an entry point, a compile, a spawned job)
def test_view_entry_point_serves_a_checkpoint_and_a_ply(tmp_path, rodent_root, trained_run):
    """python -m gslrm.view as users start it: the page is served; a .ply opens; bad input is one line."""
    from gslrm.view.browser import free_port

    port = free_port()
    command = [
        "-m",
        "gslrm.view",
        f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}",
        f"port={port}",
        *data_overrides(rodent_root),
        f"data.image_size={TRAINED_IMAGE_SIZE}",
    ]
    env = dict(os.environ, GSLRM_LOG_DIR=str(tmp_path / "logs"))
    process = warm_python.start(command, cwd=tmp_path, env=env, merge_stderr=True)
    try:
        deadline, page = time.monotonic() + 120, None
        while page is None and time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    page = response.read().decode()
            except OSError:
                time.sleep(0.5)
        assert page is not None and "<html" in page.lower(), process.communicate()[0] if process.poll() else ""
    finally:
        process.terminate()
        process.wait(timeout=30)

    g = gaussians_of([[0, 0, 0], [0.1, 0, 0]], [[0.05] * 3] * 2, [[1, 0, 0, 0]] * 2, [0.9, 0.01])
    save_ply(tmp_path / "g.ply", g)
    view_main = pytest.importorskip("gslrm.view.__main__")
    from conftest import compose

    cfg = compose("view", f"ply={tmp_path / 'g.ply'}", "port=0")
    viewer = view_main.build_viewer(cfg)
    try:
        assert viewer.scene.c2w is None and len(viewer.splats) == 1  # the 0.01-opacity one is below 0.02
    finally:
        viewer.stop()

    bad = warm_python.run(["-m", "gslrm.view", f"ply={tmp_path / 'missing.ply'}"], cwd=tmp_path, env=env, timeout=120)
    assert bad.returncode == 1 and "ply: " in bad.stderr + bad.stdout and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_live_viewer_during_training_shows_each_validation(rodent_root):
    """callbacks.viewer.enabled=true, in-process: one scene per validation reaches the viewer (on its worker
    thread), named after the step and the validation sample; the server stops with the fit."""
    import lightning as L

    from gslrm.data.datamodule import ViewDataModule
    from gslrm.data.dataset import DataConfig
    from gslrm.lit.live_viewer import LiveViewer
    from gslrm.lit.module import GSLRMModule
    from gslrm.lit.optim import OptimConfig
    from gslrm.losses.computer import LossConfig
    from gslrm.model.gslrm import ModelConfig

    data = DataConfig(
        root=str(rodent_root),
        image_size=16,
        num_workers=0,
        batch_size=1,
        generator={"samples": 4, "val_samples": 1, "seed": 3},
    )
    module = GSLRMModule(
        ModelConfig(dim=32, depth=1, head_dim=16),
        LossConfig(perceptual={"weight": 0.0}),
        OptimConfig(warmup_steps=1),
        num_input_views=4,
        val_lpips=False,
    )
    live = LiveViewer(enabled=True, port=0)
    names = []
    trainer = L.Trainer(
        max_steps=4,
        limit_train_batches=2,
        accelerator="cpu",
        logger=False,
        callbacks=[live],
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
    )
    original_start = live.setup

    def setup_and_watch(trainer, module, stage):
        original_start(trainer, module, stage)
        if live.viewer is not None and not names:
            show = live.viewer.show
            live.viewer.show = lambda scene: (names.append(scene.name), show(scene))
            names.append("started")

    live.setup = setup_and_watch
    trainer.fit(module, datamodule=ViewDataModule(data))
    assert live.viewer is None  # stopped with the fit
    sample = ViewDataModule(data).dataset("val").samples[0].name
    assert live.shown == 2 and names[1:] == [f"step {step}: {sample}" for step in (2, 4)], names


def test_render_this_view_moves_the_ground_truth_onto_the_viewer_background():
    """The nearest rig view's ground truth, recorded on a black data background, is shown on the viewer's white:
    a transparent pixel becomes white, an opaque one keeps its colour; the nearest camera is the one looked through."""
    from types import SimpleNamespace

    from gslrm.cameras import turntable_cameras
    from gslrm.view.viewer import Viewer, ViewerConfig, ViewScene

    c2w, fxfycxcy = turntable_cameras(4, resolution=8, radius=2.7, elevation_deg=20.0)
    images = torch.zeros(4, 4, 8, 8)  # RGB on black, alpha 0 ...
    images[:, :3, 2:4, 2:4], images[:, 3, 2:4, 2:4] = 0.25, 1.0  # ... but a 2x2 opaque grey patch
    images[:, :3, 5, 5], images[:, 3, 5, 5] = 0.25, 0.5  # and an edge pixel: colour 0.5 at alpha 0.5, on black
    g = gaussians_of([[0, 0, 0]], [[0.05] * 3], [[1, 0, 0, 0]], [0.9])
    viewer = Viewer(ViewerConfig(port=0, background="white")).start()
    try:
        viewer.show(ViewScene("patch", g, c2w.float(), fxfycxcy.float(), images, 2, data_background=torch.zeros(3)))
        camera = SimpleNamespace(
            wxyz=matrix_to_quat(c2w[2, :3, :3].numpy()),
            position=c2w[2, :3, 3].numpy(),
            fov=2 * math.atan(4 / float(fxfycxcy[2, 1])),
            image_width=8,
            image_height=8,
        )
        result = viewer.render_view(SimpleNamespace(camera=camera))
    finally:
        viewer.stop()
    assert result["nearest"] == 2
    truth = result["ground_truth"]
    torch.testing.assert_close(truth[:, 0, 0], torch.ones(3))  # transparent: the viewer's white
    torch.testing.assert_close(truth[:, 2, 2], torch.full((3,), 0.25))  # opaque: unchanged
    torch.testing.assert_close(truth[:, 5, 5], torch.full((3,), 0.75))  # 0.5 x 0.5 + white x 0.5
