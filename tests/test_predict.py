"""predict.py: a recording in 3D. The world-frame transform against hand-computed values and a 1e-9 round trip, the
frame selection, the per-frame readout, and whole predictions of a synthetic MAMMAL recording (its animal's true
centre of mass known per frame): units, resuming, sharding, bad frames and checkpoints that do not fit."""

import csv
import math
import os
import shutil
import signal
import time

import numpy as np
import pytest
import torch
import warm_python
from cli import ROOT

# imported before the recording fixture runs MuJoCo: OSMesa's llvmpipe loads its LLVM, and triton's (imported by
# Lightning's torchvision on first use) then segfaults on the clashing symbols
import gslrm.session.predictor  # noqa: F401
from gslrm.rig import RigTransform
from gslrm.session.frames import FrameRange, chunks_of_worker
from gslrm.session.store import FrameResult, SequenceStore
from gslrm.session.world import (
    normalized_from_world,
    quaternion_from_matrix,
    quaternion_multiply,
    to_normalized,
    to_world,
    world_from_normalized,
)

FRAMES, FPS = 8, 100


def _rotation(axis, degrees):
    axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    angle = math.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def _quat_to_matrix(q):
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


# -- the world frame ---------------------------------------------------------------------------------------------


def test_world_from_normalized_known_answer():
    """x' = s R (x - c) with R = 90 deg about z, s = 0.5, c = (10, 20, 30) mm: the world point c + (4, 0, 0) is
    normalized to 0.5 * (0, 4, 0) = (0, 2, 0), and back; its unit x axis turns into y."""
    transform = RigTransform(rotation=_rotation([0, 0, 1], 90), center=np.array([10.0, 20.0, 30.0]), scale=0.5)
    matrix = world_from_normalized(transform)
    assert np.allclose(transform.apply_points(np.array([[14.0, 20.0, 30.0]])), [[0.0, 2.0, 0.0]])
    means, scales, quats = to_world(matrix, [[0.0, 2.0, 0.0]], [[1.0, 2.0, 3.0]], [[1.0, 0.0, 0.0, 0.0]])
    assert np.allclose(means, [[14.0, 20.0, 30.0]], atol=1e-12)
    assert np.allclose(scales, [[2.0, 4.0, 6.0]])  # normalized lengths / 0.5
    # the identity orientation in the normalized frame is R^T in the world: -90 deg about z, (cos 45, 0, 0, -sin 45)
    assert np.allclose(quats, [[math.sqrt(0.5), 0.0, 0.0, -math.sqrt(0.5)]])
    assert np.allclose(normalized_from_world(matrix) @ matrix, np.eye(4), rtol=0, atol=1e-12)


def test_gaussians_at_known_world_points_round_trip_to_1e_9():
    """Random world Gaussians (mm, 1.5 m off the origin) through a rig's normalization (written out here from its
    definition, not with the code under test) and back: means, scales and rotations to 1e-9, and the covariance
    R S^2 R^T of each equal to A Sigma' A^T."""
    rng = np.random.default_rng(0)
    rotation = _rotation(rng.normal(size=3), 137.0)
    transform = RigTransform(rotation=rotation, center=np.array([1500.0, -320.0, 80.0]), scale=2.7 / 412.0)
    means = transform.center + rng.normal(scale=60.0, size=(50, 3))
    scales = rng.uniform(0.1, 8.0, size=(50, 3))
    quats = rng.normal(size=(50, 4))
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    # the forward map by its definition: x' = s R (x - c), scales * s, orientation R(q') = R R(q)
    normalized_means = transform.scale * (means - transform.center) @ rotation.T
    normalized_scales = scales * transform.scale
    normalized_quats = np.array([quaternion_from_matrix(rotation @ _quat_to_matrix(q)) for q in quats])
    matrix = world_from_normalized(transform)
    back_means, back_scales, back_quats = to_world(matrix, normalized_means, normalized_scales, normalized_quats)
    assert np.abs(back_means - means).max() < 1e-9
    assert np.abs(back_scales - scales).max() < 1e-9
    same_sign = np.sign((back_quats * quats).sum(1, keepdims=True))  # q and -q are one rotation
    assert np.abs(back_quats * same_sign - quats).max() < 1e-9
    for q, s, q_n, s_n in zip(back_quats, back_scales, normalized_quats, normalized_scales, strict=True):
        world = _quat_to_matrix(q) @ np.diag(s**2) @ _quat_to_matrix(q).T
        a = matrix[:3, :3]
        assert np.abs(world - a @ (_quat_to_matrix(q_n) @ np.diag(s_n**2) @ _quat_to_matrix(q_n).T) @ a.T).max() < 1e-9
    again = to_normalized(matrix, back_means, back_scales, back_quats)
    assert np.abs(again[0] - normalized_means).max() < 1e-12


def test_quaternion_helpers_known_answers():
    assert np.allclose(quaternion_from_matrix(_rotation([1, 0, 0], 180)), [0, 1, 0, 0])  # the w = 0 branch
    assert np.allclose(quaternion_from_matrix(_rotation([0, 1, 0], 90)), [math.sqrt(0.5), 0, math.sqrt(0.5), 0])
    i, j = np.array([0.0, 1, 0, 0]), np.array([0.0, 0, 1, 0])
    assert np.allclose(quaternion_multiply(i, j), [0, 0, 0, 1])  # i j = k
    assert np.allclose(quaternion_multiply(j, i), [0, 0, 0, -1])


def test_per_camera_zoom_has_no_world_frame():
    with pytest.raises(ValueError, match="per_camera_zoom: true moves each camera separately"):
        world_from_normalized(RigTransform(per_camera_zoom=True))


# -- frames and the per-frame readout ----------------------------------------------------------------------------


def test_frame_range_and_the_chunks_of_each_worker():
    selected = FrameRange.parse("10:30:5")
    assert [f for f in range(40) if f in selected] == [10, 15, 20, 25]
    assert [f for f in range(5) if f in FrameRange.parse("::2")] == [0, 2, 4]
    assert [f for f in range(5) if f in FrameRange.parse("3:")] == [3, 4]
    for bad, message in [("1:2:0", "step must be >= 1"), ("a:b", "is not START:STOP:STEP"), ("-3:", ">= 0")]:
        with pytest.raises(ValueError, match=message):
            FrameRange.parse(bad)
    assert chunks_of_worker(7, 1, 3) == [1, 4]
    assert sorted(c for w in range(3) for c in chunks_of_worker(7, w, 3)) == list(range(7))  # each chunk, once
    with pytest.raises(ValueError, match="predict.shard: 3 is not in 0..2"):
        chunks_of_worker(7, 3, 3)


def test_frame_readout_known_answer():
    """Four Gaussians of equal opacity at (-+2, 0, 0) and (0, -+1, 0) about (100, 200, 300): the weighted centroid
    is that point; the weighted variance is 0.25 * 4 * 2 = 2 along x (first axis, extent sqrt 2), 0.5 along y, 0
    along z."""
    means = np.array([[-2.0, 0, 0], [2.0, 0, 0], [0, -1.0, 0], [0, 1.0, 0]]) + [100.0, 200.0, 300.0]
    opacities = np.array([0.25, 0.25, 0.25, 0.25])
    result = FrameResult(0, np.eye(4), means, np.ones((4, 3)), np.tile([1.0, 0, 0, 0], (4, 1)), opacities, means)
    summary = result.shape_summary()
    assert np.allclose(summary["centroid"], [100.0, 200.0, 300.0])
    assert np.allclose(summary["extents"], [math.sqrt(2.0), math.sqrt(0.5), 0.0])
    assert np.allclose(np.abs(summary["axes"]), np.eye(3))
    assert math.isnan(FrameResult.skipped(3, "bad").shape_summary()["centroid"][0])


def test_compact_encoding_known_answers_and_its_error_bounds():
    """Hand-computed codes, then 5,000 random world-frame Gaussians through encode/decode within the bounds the
    module documents; float32 is exact."""
    from gslrm.session.encoding import decode, encode

    means = np.array([[100.0, 200.0, 300.0], [400.0, 200.0, 300.0], [250.0, 200.0, 390.0]])
    rotations = np.array([[-1.0, 0, 0, 0], [0.6, 0.8, 0, 0], [0.5, 0.5, 0.5, -0.5]])
    codes = encode("compact", means, [[1.0] * 3] * 3, rotations, [1.0, 0.02, 0.5], [[0.5] * 3] * 3)
    assert codes["means_lo"].tolist() == [100.0, 200.0, 300.0] and codes["means_hi"].tolist() == [400, 200, 390]
    # x: 0, 65535, 150/300 * 65535 = 32767.5 -> 32768 (round half to even); y: one value, a zero span; z: 0, 0, 65535
    assert codes["means_u16"].tolist() == [[0, 0, 0], [65535, 0, 0], [32768, 0, 65535]]
    # -q is q's rotation: w >= 0; 0.6 * 127 = 76.2 -> 76, 0.8 * 127 = 101.6 -> 102, 0.5 * 127 = 63.5 -> 64
    assert codes["rotations_i8"].tolist() == [[127, 0, 0, 0], [76, 102, 0, 0], [64, 64, 64, -64]]
    assert codes["opacities_u8"].tolist() == [255, 5, 128] and codes["log_scales"].tolist() == [[0.0] * 3] * 3

    generator = np.random.default_rng(0)
    n = 5000
    means = generator.uniform([-150, 50, 400], [150, 250, 480], (n, 3))  # a 300 mm box
    scales = np.exp(generator.uniform(-3, 3, (n, 3)))
    rotations = generator.normal(size=(n, 4))
    rotations /= np.linalg.norm(rotations, axis=1, keepdims=True)
    opacities, colors = generator.uniform(0.02, 1, n), generator.uniform(-0.2, 1.3, (n, 3))
    decoded = decode("compact", encode("compact", means, scales, rotations, opacities, colors))
    assert np.abs(decoded["means"] - means).max() <= 300 / 131070 + 1e-4  # half a step (+ float32 rounding)
    assert np.abs(decoded["scales"] / scales - 1).max() < 2e-3  # float16's 2^-11 on log(scale) of |log| <= 3
    angle = 2 * np.degrees(np.arccos(np.abs((decoded["rotations"] * rotations).sum(1)).clip(max=1)))
    assert angle.max() < 1.0  # each component within 1/254
    assert np.abs(decoded["opacities"] - opacities).max() <= 1 / 510 + 1e-7
    assert np.abs(decoded["colors"] - colors).max() < 1e-3  # float16, not clipped to [0, 1]
    exact = decode("float32", encode("float32", means, scales, rotations, opacities, colors))
    assert np.array_equal(exact["means"], means.astype(np.float32))


# -- whole predictions -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def session_root(tmp_path_factory):
    """A synthetic MAMMAL recording of FRAMES frames at FPS, 288x256 px, imported as it is (train | val split): one
    sample per source frame, the calibration in millimetres; ground_truth/animal.csv beside it."""
    from gslrm.data.recordings.importer import main as import_main
    from gslrm.data.recordings.synthetic import record

    recording = tmp_path_factory.mktemp("session")
    record(recording, ("mammal",), frames=FRAMES, width=288, height=256, seed=11, fps=FPS)
    root = recording / "imported"
    code = import_main(
        ["mammal", str(recording / "mammal"), "--out", str(root), "--split", "val=0.25", "--split-gap", "0"]
        + ["--workers", "1", "--no-check"]
    )
    assert code == 0
    return root


def _overrides(ckpt, root, out) -> list[str]:
    """The tests' predict.py settings: the session's recording at 16 px into ``out``, 3-frame chunks."""
    return [
        f"ckpt_path={ckpt}",
        "data=mouse",
        f"data.root={root}",
        "data.image_size=16",
        "data.num_workers=0",
        f"predict.out={out}",
        "predict.frames_per_chunk=3",
        "predict.num_workers=0",
    ]


def _predict(ckpt, root, out, *overrides):
    from conftest import compose

    from predict import predict

    cfg = compose("predict", *_overrides(ckpt, root, out), f"paths.output_dir={out.parent / 'run'}", *overrides)
    return predict(cfg)


def _predict_arguments(ckpt, root, out, *overrides) -> list[str]:
    """``_predict``'s run as ``python predict.py`` arguments (the tests that kill it or run it on 2 DDP ranks)."""
    return [str(ROOT / "predict.py"), *_overrides(ckpt, root, out), *overrides]


def _assert_same_store(got, expected) -> None:
    """Every array bit for bit (NaN where NaN) and the same frame table."""
    want = _arrays(expected)
    for name, array in _arrays(got).items():
        assert np.array_equal(array, want[name], equal_nan=True), name
    assert _table(got) == _table(expected)


def _truth(root):
    rows = np.loadtxt(root.parent / "ground_truth" / "animal.csv", delimiter=",", skiprows=1)
    return {int(row[0]): row[1:] for row in rows}


def _table(out):
    with open(out / "frames.csv") as handle:
        return list(csv.DictReader(handle))


def _arrays(out):
    import zarr

    group = zarr.open_group(out / "sequence.zarr", mode="r")
    return {name: group[name][:] for name in group.array_keys()}


def _checkpoint(trained_run):
    return next((trained_run / "checkpoints").glob("last.ckpt"))


def test_a_recording_in_the_rigs_millimetres(trained_run, session_root, tmp_path):
    """The trained fixture over the whole recording: every frame in source order with its time, the Gaussians in
    the calibration's millimetres, readable with zarr alone, one .ply per frame equal to the store, the table."""
    out = tmp_path / "store"
    summary = _predict(_checkpoint(trained_run), session_root, out, "predict.ply=true")
    assert summary | {"seconds": None} == {"store": str(out), "written": FRAMES, "skipped": 0, "complete": True} | {
        "seconds": None
    }
    stages = summary["seconds"]
    assert set(stages) == {"loop", "model", "to_world", "store", "ply"} and 0 < stages["model"] < stages["loop"]
    arrays = _arrays(out)
    assert arrays["frame"].tolist() == list(range(FRAMES))
    assert np.allclose(arrays["time"], np.arange(FRAMES) / FPS)  # import_info.json's fps
    assert (arrays["count"] > 0).all()
    rows = _table(out)
    assert [int(r["frame"]) for r in rows] == list(range(FRAMES)) and {r["status"] for r in rows} == {"ok"}
    truth = _truth(session_root)
    centroids = np.array([[float(r[f"centroid_{c}"]) for c in "xyz"] for r in rows])
    errors = np.linalg.norm(centroids - np.array([truth[f] for f in range(FRAMES)]), axis=1)
    # the rig centre sits 430 mm from the calibration's origin: a centroid left in the normalized frame (within 1
    # unit of 0) or with the scale not undone would miss by hundreds of mm. The fixture is 4 steps old, a blob about
    # the animal: its centroid lies within a third of a body length (57 mm) of the true centre of mass.
    # The fixture is 4 steps old: a blob at the scene centre (the point the optical axes meet: the normalized
    # origin, which world_from_normalized maps back to), not yet following the animal, which moves 30 mm over these
    # frames about 15-40 mm from that centre. So: every centroid within 40 mm (a quarter of the 170 mm body) of the
    # true centre of mass, and within 20 mm of the scene centre (measured: 14) in the calibration's millimetres. Left in the
    # normalized frame (within ~1 unit of 0) or unscaled, the centroid would miss both by ~70 mm or more; following
    # the animal needs a trained model, which no test can afford.
    assert errors.max() < 40.0, errors
    scene_centre = arrays["world_from_normalized"][:, :3, 3]
    assert np.linalg.norm(scene_centre, axis=1).min() > 60.0
    assert np.linalg.norm(centroids - scene_centre, axis=1).max() < 20.0
    extents = np.array([[float(r[f"extent{a}"]) for a in range(3)] for r in rows])
    assert (extents > 5.0).all() and (extents < 300.0).all()  # millimetres: a mouse-sized cloud, not 0.1-unit
    from gslrm.model.gaussians import load_ply

    store = SequenceStore(out)
    frame = store.read_frame(5)  # the default compact encoding, decoded: within its bounds of the .ply's floats
    ply = load_ply(out / "ply" / "frame_000005.ply")
    box = float((ply.means[0].max(0).values - ply.means[0].min(0).values).max())
    assert torch.allclose(ply.means[0], torch.from_numpy(frame["means"]), rtol=0, atol=box / 131070 + 1e-4)
    assert torch.allclose(ply.opacities[0], torch.from_numpy(frame["opacities"]), rtol=0, atol=1 / 510 + 1e-6)
    assert store.manifest()["complete"] and store.bytes_on_disk() > 0


def test_rerun_continues_and_shards_give_the_same_store_bit_for_bit(trained_run, session_root, tmp_path):
    """One process; then two shards into another store; then a 'torn' run (a chunk's marker gone, its arrays
    scribbled over, as if killed between the two) that the rerun redoes alone: the same arrays, bit for bit."""
    ckpt = _checkpoint(trained_run)
    one, two = tmp_path / "one", tmp_path / "two"
    _predict(ckpt, session_root, one)
    first = _predict(ckpt, session_root, two, "predict.num_shards=2", "predict.shard=1")
    assert first["written"] == 3 and not first["complete"]  # chunk 1 of 0..2 (3 frames a chunk): frames 3-5
    second = _predict(ckpt, session_root, two, "predict.num_shards=2", "predict.shard=0")
    assert second["written"] == FRAMES - first["written"] and second["complete"]
    reference = _arrays(one)
    for name, array in _arrays(two).items():
        assert np.array_equal(array, reference[name], equal_nan=True), name
    assert _table(one) == _table(two)
    # torn: chunk 1's marker lost and its means overwritten; the rerun redoes those 3 frames only
    import zarr

    (two / "done" / "chunk_000001.json").unlink()
    zarr.open_group(two / "sequence.zarr", mode="r+")["means_u16"][3:6] = 7
    again = _predict(ckpt, session_root, two)
    assert again["written"] == 3
    assert np.array_equal(_arrays(two)["means_u16"], reference["means_u16"])
    assert _predict(ckpt, session_root, two)["written"] == 0  # nothing is computed twice


def test_a_frame_with_a_missing_view_is_named_and_skipped_or_fails(trained_run, session_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(session_root, root)
    (root / "frame_000004" / "images" / "cam_002.png").unlink()
    out = tmp_path / "store"
    summary = _predict(_checkpoint(trained_run), root, out)
    assert summary["skipped"] == 1 and summary["complete"]
    row = _table(out)[4]
    assert row["gaussians"] == "-1" and row["status"].startswith("skipped: ") and "cam_002.png" in row["status"]
    assert _arrays(out)["count"][4] == -1 and store_manifest(out)["frames_skipped"] == 1
    from gslrm.data.format import DataFormatError

    with pytest.raises(DataFormatError, match=r"frame_000004.*cam_002.png"):
        _predict(_checkpoint(trained_run), root, tmp_path / "store_fail", "predict.on_error=fail")


def store_manifest(out):
    return SequenceStore(out).manifest()


def test_checkpoints_that_do_not_fit_fail_in_one_line(trained_run, session_root, tmp_path):
    from test_inference import _five_input_checkpoint

    from gslrm.inference import CheckpointMismatchError
    from gslrm.session.store import StoreMismatchError

    five = _five_input_checkpoint(tmp_path / "five.ckpt")
    with pytest.raises(CheckpointMismatchError, match="trained with 5 input views, but the data has data.num_views=4"):
        _predict(five, session_root, tmp_path / "a", "data.num_views=4", "data.view_order=[0,1,2,3]")
    with pytest.raises(CheckpointMismatchError, match=r"predict.input_views: \[0, 9\]: camera indices"):
        _predict(_checkpoint(trained_run), session_root, tmp_path / "b", "predict.input_views=[0,9]")
    out = tmp_path / "c"
    _predict(_checkpoint(trained_run), session_root, out, "frames=0:3")
    with pytest.raises(StoreMismatchError, match="holds another prediction: checkpoint_sha256"):
        _predict(five, session_root, out, "frames=0:3")


@pytest.mark.slow  # two predict.py processes
def test_kill_9_mid_run_then_rerun_gives_the_uninterrupted_store(trained_run, session_root, tmp_path):
    """kill -9 while a chunk is being written (slowed down by the test hook), then the same command again: the
    store equals an uninterrupted one's."""
    ckpt = _checkpoint(trained_run)
    reference = tmp_path / "reference"
    _predict(ckpt, session_root, reference, "predict.frames_per_chunk=2")
    out = tmp_path / "killed"
    arguments = _predict_arguments(ckpt, session_root, out, "predict.frames_per_chunk=2")
    env = dict(os.environ, GSLRM_LOG_DIR=str(tmp_path / "logs"), GSLRM_TEST_SLOW_CHUNK_WRITE="0.5")
    process = warm_python.start(arguments, env=env, merge_stderr=True, new_session=True)
    deadline = time.monotonic() + 120
    while not list((out / "done").glob("chunk_*.json")) if out.exists() else True:
        assert process.poll() is None and time.monotonic() < deadline, "predict.py ended before the first chunk"
        time.sleep(0.05)
    time.sleep(0.2)  # into the next chunk's write
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done = len(list((out / "done").glob("chunk_*.json")))
    assert 0 < done < FRAMES // 2
    result = warm_python.run(arguments, env=dict(env, GSLRM_TEST_SLOW_CHUNK_WRITE="0"))
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_store(out, reference)


@pytest.mark.slow  # two DDP ranks: a predict.py process and the one Lightning starts for rank 1
def test_a_ddp_rank_with_no_frame_waits_for_the_other(trained_run, session_root, tmp_path):
    """One chunk over 2 DDP ranks (a resumed attempt's last chunk looks like this): rank 1's loader is empty. Lightning
    raised on that rank by default and rank 0 then lost its peer; now rank 1 waits and the store equals one
    process's."""
    ckpt = _checkpoint(trained_run)
    reference = tmp_path / "reference"
    _predict(ckpt, session_root, reference, "frames=0:2")
    out = tmp_path / "ddp"
    arguments = _predict_arguments(
        ckpt, session_root, out, "frames=0:2", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"
    )
    env = dict(os.environ, GSLRM_LOG_DIR=str(tmp_path / "logs"))
    result = warm_python.run(arguments, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr + "".join(p.read_text() for p in (tmp_path / "logs").rglob("*.log"))
    assert "worker 1 of 2 (shard 0, rank 1 on " in log and "0 frames to do in 0 chunks" in log, log[-3000:]
    _assert_same_store(out, reference)


def test_video_frame_known_answer_the_rig_centre_is_drawn_at_the_centre():
    """A black Gaussian at the rig centre (the normalized origin, in a world 400 mm away and scaled by 100) is drawn
    in the middle of the orbit view from every azimuth; nothing drawn: the background."""
    from gslrm.session.config import PredictConfig
    from gslrm.session.video import orbit_azimuth, render_frame

    matrix = np.eye(4)
    matrix[:3, :3] = 100.0 * _rotation([0, 0, 1], 30)
    matrix[:3, 3] = [400.0, 0.0, 0.0]
    frame = {
        "count": 1,
        "means": np.array([[400.0, 0.0, 0.0]], np.float32),
        "scales": np.full((1, 3), 10.0, np.float32),  # 0.1 normalized units: 1.3 px at 32 px
        "rotations": np.array([[1.0, 0, 0, 0]], np.float32),
        "opacities": np.array([0.99], np.float32),
        "colors": np.zeros((1, 3), np.float32),
    }
    config = PredictConfig(video_size=32)
    for azimuth in (0.0, 135.0, 270.0):
        image = render_frame(frame, matrix, azimuth, config).astype(float).mean(-1)
        assert np.unravel_index(image.argmin(), image.shape) in {(15, 15), (15, 16), (16, 15), (16, 16)}
        assert image.min() < 60 and image[0, 0] == 255  # the Gaussian, dark; a corner, white
    assert render_frame(frame | {"count": -1}, matrix, 0.0, config).min() == 255  # a skipped frame
    assert orbit_azimuth(2.0, PredictConfig(video_orbit_deg_per_s=100, video_azimuth_deg=270)) == 110.0


def test_video_shows_the_orbit_beside_the_real_camera(trained_run, session_root, tmp_path):
    """predict.video=true: an MP4 of every frame at the recording's rate, the orbit view (45 degrees a frame here)
    beside camera 0's photograph of the same frame."""
    import av
    from PIL import Image

    from gslrm.data.format import read_cameras

    out = tmp_path / "store"
    orbit = "predict.video_orbit_deg_per_s=4500"  # 45 degrees a frame at 100 fps
    summary = _predict(
        _checkpoint(trained_run), session_root, out, "predict.video=true", "predict.video_size=32", orbit
    )
    assert summary["video"] == str(out / "video.mp4")
    with av.open(summary["video"]) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate)
        frames = [frame.to_ndarray(format="rgb24").astype(float) for frame in container.decode(stream)]
    assert len(frames) == FRAMES and rate == FPS
    assert frames[0].shape == (32, 32 + 36, 3)  # the 288x256 photograph scaled to 32 px high: 36 px wide
    novel = [frame[:, :32] for frame in frames]
    assert all(image.mean() < 250 for image in novel)  # something drawn on the white background
    assert np.abs(novel[0] - novel[2]).mean() > 2  # 90 degrees later: another view
    sample = session_root / SequenceStore(out).group().attrs["samples"][3]
    camera = read_cameras(sample / "opencv_cameras.json")[0]
    expected = np.asarray(Image.open(sample / camera.file_path).convert("RGB").resize((36, 32), Image.BILINEAR))
    assert np.abs(frames[3][:, 32:] - expected).mean() < 8  # H.264's loss


# -- scoring a session with a held-out camera --------------------------------------------------------------------


def test_holdout_inputs_and_temporal_stability_known_answers():
    from gslrm.session.scoring import holdout_inputs, temporal_stability

    assert holdout_inputs(list(range(6)), 4, 2) == ([0, 1, 3, 4], 4)  # the rest [2, 5]: camera 2 is slot 4
    assert holdout_inputs(list(range(6)), 4, 5) == ([0, 1, 2, 3], 5)
    assert holdout_inputs([3, 1, 0, 2], 2, 3) == ([1, 0], 2)
    with pytest.raises(ValueError, match="eval.holdout_view: camera 9 is not one of the rig's views"):
        holdout_inputs(list(range(6)), 4, 9)
    with pytest.raises(ValueError, match="leaves 2 views, the checkpoint needs 3 inputs"):
        holdout_inputs([0, 1, 2], 3, 0)
    # truth moves 1 unit a frame along x; the prediction 1, 2 and 1 units (errors 0, 1, 0): RMS sqrt(1/3)
    rows = [
        {"frame": f, "position_units": "world", "pred_x": p, "pred_y": 0.0, "pred_z": 0.0}
        | {"true_x": float(f), "true_y": 0.0, "true_z": 0.0}
        for f, p in [(0, 0.0), (1, 1.0), (2, 3.0), (3, 4.0)]
    ]
    stability = temporal_stability(rows[::-1] + [{"frame": None}])  # any order; a frame without a position: left out
    assert stability["pairs"] == 3 and stability["frame_step"] == 1 and stability["units"] == "world"
    assert stability["motion_error_rms"] == pytest.approx(math.sqrt(1 / 3))
    assert stability["true_motion_mean"] == 1.0 and stability["predicted_motion_mean"] == pytest.approx(4 / 3)
    assert stability["position_error_mean"] == pytest.approx(0.5)  # 0, 0, 1, 1
    gap = temporal_stability([rows[0], rows[1], rows[3]])  # frames 0, 1, 3: the step is 1, so 1 -> 3 is no pair
    assert gap["pairs"] == 1


def test_mask_centroid_truth_known_answer():
    """Without the generator's truth: the predicted centroid projected into the held-out camera against its mask's
    centroid. A camera at the origin looking down +Z (f = 10, c = 8) and a Gaussian at (0.2, -0.1, 1): pixel
    (10, 7); the mask a 2x2 square over pixels 3-4 (centroid 4.0 with pixel centres at +0.5)."""
    from gslrm.model.gaussians import Gaussians
    from gslrm.session.scoring import frame_positions

    gaussians = Gaussians.from_colors(
        torch.tensor([[[0.2, -0.1, 1.0], [5.0, 5.0, 5.0]]]),
        torch.full((1, 2, 3), 0.01),
        torch.tensor([[[1.0, 0, 0, 0]] * 2]),
        torch.tensor([[1.0, 0.0]]),  # the far Gaussian has no opacity: no weight
        torch.zeros(1, 2, 3),
    )
    image = torch.zeros(1, 2, 4, 16, 16)
    image[0, 1, 3, 3:5, 3:5] = 1.0
    batch = {
        "c2w": torch.eye(4).expand(1, 2, 4, 4),
        "fxfycxcy": torch.tensor([10.0, 10.0, 8.0, 8.0]).expand(1, 2, 4),
        "image": image,
    }
    row = frame_positions(gaussians, batch, 0, 1, frame=3, truth=None)
    assert row["position_units"] == "pixels"
    assert row["pred_x"] == pytest.approx(10.0) and row["pred_y"] == pytest.approx(7.0)
    assert row["true_x"] == pytest.approx(4.0) and row["true_y"] == pytest.approx(4.0)


def test_eval_holds_a_camera_out_and_scores_the_recording_over_time(trained_run, session_root, tmp_path):
    """eval.holdout_view over the recording's train split (frames 0-5): per frame in source order its time, the
    held-out camera's metrics and the centroids in millimetres against the generator's truth; the stability over
    the 5 consecutive pairs. Holding out camera 4 or 5 leaves the default inputs 0-3, so each frame's PSNR on its
    two novel views is the mean of the two held-out runs' (an independent check of the slot)."""
    from conftest import compose

    from eval import evaluate

    def run(holdout):
        cfg = compose(
            "eval",
            f"ckpt_path={_checkpoint(trained_run)}",
            "data=mouse",
            f"data.root={session_root}",
            "data.image_size=16",
            "data.num_workers=0",
            "split=train",
            f"eval.holdout_view={holdout}",
            "eval.num_visuals=0",
            "eval.lpips=off",
            f"paths.output_dir={tmp_path / f'holdout{holdout}'}",
        )
        summary = evaluate(cfg)
        with open(tmp_path / f"holdout{holdout}" / "per_sample.csv", newline="") as handle:
            return summary, list(csv.DictReader(handle))

    summary, rows = run(5)
    assert summary["holdout_view"] == 5 and summary["num_samples"] == 6
    assert [int(row["frame"]) for row in rows] == list(range(6))
    assert [float(row["time"]) for row in rows] == pytest.approx([f / FPS for f in range(6)])
    assert all(summary[key] is not None for key in ("psnr_holdout", "psnr_masked_holdout", "opacity_iou_holdout"))
    truth = _truth(session_root)
    for row in rows:
        assert row["position_units"] == "world"
        assert [float(row[f"true_{c}"]) for c in "xyz"] == pytest.approx(list(truth[int(row["frame"])]))
    stability = summary["stability"]
    assert stability["pairs"] == 5 and stability["units"] == "world" and stability["frame_step"] == 1
    true_steps = [np.linalg.norm(truth[f + 1] - truth[f]) for f in range(5)]
    assert stability["true_motion_mean"] == pytest.approx(np.mean(true_steps))
    assert stability["position_error_mean"] < 40.0  # mm: the 4-step fixture's blob (test_a_recording_...)
    _, rows4 = run(4)
    for five, four in zip(rows, rows4, strict=True):
        mean = (float(five["psnr_holdout"]) + float(four["psnr_holdout"])) / 2
        assert mean == pytest.approx(float(five["psnr_novel"]), abs=1e-4)


def test_input_view_counts_are_scored_on_the_same_orbit_views(trained_run, rodent_root):
    """gslrm.bench.inputs: the checkpoint given 4 and 5 views, each scored on the val sample's orbit views (never
    inputs for either count)."""
    from cli import TRAINED_IMAGE_SIZE, data_overrides

    from gslrm.bench.inputs import measure

    overrides = [*data_overrides(rodent_root)[1:], f"data.image_size={TRAINED_IMAGE_SIZE}"]
    rows = measure(str(_checkpoint(trained_run)), str(rodent_root), [4, 5], overrides)
    assert [row["inputs"] for row in rows] == [4, 5]
    assert all(row["model_seconds"] > 0 and math.isfinite(row["psnr_orbit"]) for row in rows)
    assert rows[0]["psnr_orbit"] != rows[1]["psnr_orbit"]  # another input, another prediction
