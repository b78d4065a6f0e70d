"""Checkpoints survive kills: atomic writes, resuming from the newest readable file, SIGTERM, failed saves, and
fault injection (kill -9 at random moments, during checkpoint writes too) against an uninterrupted run."""

import os
import random
import signal
import time

import pytest
import torch
import warm_python
from cli import ROOT, data_overrides, run_script

from gslrm.lit.checkpoint_io import CheckpointSaveError, atomic_torch_save, unreadable_reason
from gslrm.runs import UnreadableCheckpointError, resolve_checkpoint


def write_checkpoint(path, step):
    atomic_torch_save({"global_step": step, "weights": torch.arange(1000.0)}, path)
    return path


def corrupt(path, how):
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "not_zip": b"not a checkpoint\n" * 50}[how])


@pytest.mark.parametrize("how", ["truncated", "empty", "not_zip"])
def test_unreadable_checkpoints_are_told_apart(tmp_path, how):
    path = write_checkpoint(tmp_path / "last.ckpt", 7)
    assert unreadable_reason(path) is None
    corrupt(path, how)
    assert unreadable_reason(path) is not None


def test_atomic_save_leaves_no_partial_file_and_replaces_whole(tmp_path):
    path = write_checkpoint(tmp_path / "last.ckpt", 1)
    write_checkpoint(path, 2)
    assert torch.load(path, weights_only=True)["global_step"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_failed_save_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = write_checkpoint(tmp_path / "last.ckpt", 1)
    before = path.read_bytes()

    def disk_full(obj, handle, *args, **kwargs):
        handle.write(b"partial bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointSaveError) as error:
        atomic_torch_save({"global_step": 2}, path)
    assert str(error.value) == f"could not save checkpoint {path}: No space left on device (the previous file is kept)"
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.mark.parametrize("how", ["truncated", "empty", "not_zip"])
def test_last_resumes_from_the_newest_readable_checkpoint_with_a_warning(tmp_path, how, caplog):
    old = tmp_path / "runs" / "2026-01-01_00-00-00" / "checkpoints"
    write_checkpoint(old / "last.ckpt", 3)
    time.sleep(0.02)
    new = tmp_path / "runs" / "2026-01-02_00-00-00" / "checkpoints"
    intact = write_checkpoint(new / "step_0000020.ckpt", 20)
    time.sleep(0.02)
    torn = write_checkpoint(new / "last.ckpt", 25)
    corrupt(torn, how)
    with caplog.at_level("WARNING"):
        assert resolve_checkpoint("last", tmp_path) == str(intact)
    assert f"skipping unreadable {torn}" in caplog.text
    with pytest.raises(UnreadableCheckpointError, match=f"^ckpt_path: {torn}: "):
        resolve_checkpoint(str(torn), tmp_path)


def test_last_without_any_readable_checkpoint_says_so(tmp_path):
    folder = tmp_path / "runs" / "r" / "checkpoints"
    corrupt(write_checkpoint(folder / "last.ckpt", 1), "truncated")
    with pytest.raises(FileNotFoundError, match="no readable checkpoint in"):
        resolve_checkpoint("last", tmp_path)


@pytest.mark.slow  # starts a Python process (an entry point, a compile, a spawned job)
@pytest.mark.parametrize("script", ["train.py", "eval.py", "refine.py"])
def test_entry_points_name_an_unreadable_checkpoint_in_one_line(tmp_path, rodent_root, script):
    path = write_checkpoint(tmp_path / "broken.ckpt", 1)
    corrupt(path, "truncated")
    extra = {"refine.py": ["sample=0"], "train.py": ["loss=l2"]}.get(script, [])
    result = run_script(script, tmp_path, rodent_root, f"ckpt_path={path}", *extra, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and f"ckpt_path: {path}: not a readable checkpoint" in output, output[-2000:]
    assert "Traceback" not in output


# -- whole runs ----------------------------------------------------------------------------------------------------
RUN = [
    "loss=l2",
    "logger=csv",
    "data.image_size=16",
    "trainer.max_steps=24",
    "val_every=24",
    "validate_before_training=false",
    "callbacks.model_checkpoint.every_n_train_steps=3",
]


def start_train(log_dir, rodent_root, *overrides, env=None, output=None):
    """train.py in the background; its output is piped, or written to ``output`` (a file: for a process that runs to
    its end unread, whose output would fill the pipe and stall it)."""
    env = dict(os.environ, GSLRM_LOG_DIR=str(log_dir), WANDB_MODE="offline", **(env or {}))
    command = [str(ROOT / "train.py"), *data_overrides(rodent_root), *overrides]
    return warm_python.start(command, cwd=log_dir.parent, env=env, output=output, merge_stderr=True, new_session=True)


def wait_for(condition, process, timeout=300.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.02)
    raise AssertionError("timed out")


def checkpoints(log_dir):
    return list((log_dir / "train" / "runs").glob("*/checkpoints/*.ckpt"))


def partial_files(log_dir):
    return list((log_dir / "train" / "runs").glob("*/checkpoints/.*.partial-*"))


def final_val_psnr(log_dir):
    import csv

    run = sorted((log_dir / "train" / "runs").glob("*"), key=lambda p: p.stat().st_mtime)[-1]
    rows = list(csv.DictReader(open(next(run.glob("csv/version_*/metrics.csv")))))
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return float([r for r in rows if r.get("val/psnr")][-1]["val/psnr"]), state["global_step"]


@pytest.mark.slow
def test_sigterm_writes_last_ckpt_with_the_step_reached(tmp_path, rodent_root):
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    process = start_train(log_dir, rodent_root, *RUN, "trainer.max_steps=100000")
    assert wait_for(lambda: any(p.name.startswith("step_") for p in checkpoints(log_dir)), process)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    last = next((log_dir / "train" / "runs").glob("*/checkpoints/last.ckpt"))
    assert unreadable_reason(last) is None
    step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert 3 <= step < 100000
    assert f"last.ckpt (step {step})" in output, output[-3000:]


@pytest.mark.slow
def test_fault_injection_kill_9_then_resume_matches_an_uninterrupted_run(tmp_path, rodent_root):
    """2 trials: kill -9 during a checkpoint write (trial 0, the write slowed down by the test hook) and at a random
    moment after the first checkpoint (trial 1), resume with ckpt_path=last; each ends at step 24 with the
    uninterrupted run's val PSNR. (Each trial is two train.py processes, ~20 s on 2 cores: one of the suite's longest
    tests, so 2 trials, not more. The uninterrupted reference runs meanwhile, in the background: the runs are
    deterministic, whatever else runs.)"""
    reference_dir = tmp_path / "reference" / "logs"
    reference_dir.mkdir(parents=True)
    reference = start_train(reference_dir, rodent_root, *RUN, output=tmp_path / "reference.out")
    chance = random.Random(0)
    results = []
    for trial in range(2):
        log_dir = tmp_path / f"trial{trial}" / "logs"
        log_dir.mkdir(parents=True)
        slow = {"GSLRM_TEST_SLOW_CHECKPOINT_WRITE": "0.4"}
        process = start_train(log_dir, rodent_root, *RUN, env=slow)
        assert wait_for(lambda d=log_dir: any(p.name.startswith("step_") for p in checkpoints(d)), process)
        if trial == 0:
            assert wait_for(lambda d=log_dir: partial_files(d), process)  # a checkpoint write is under way
        else:
            time.sleep(chance.uniform(0.0, 3.0))
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        killed_during_write = bool(partial_files(log_dir))
        assert trial != 0 or killed_during_write
        run_script("train.py", log_dir.parent, rodent_root, *RUN, "ckpt_path=last")
        psnr, step = final_val_psnr(log_dir)
        assert step == 24, (trial, step)
        results.append((trial, psnr, killed_during_write))
    reference.wait(timeout=300)
    assert reference.returncode == 0, (tmp_path / "reference.out").read_text()[-3000:]
    reference_psnr, reference_step = final_val_psnr(reference_dir)
    assert reference_step == 24
    for trial, psnr, killed_during_write in results:
        assert abs(psnr - reference_psnr) <= 0.05, (trial, psnr, reference_psnr, killed_during_write)


@pytest.mark.slow
def test_skip_policy_through_a_whole_run(tmp_path):
    """10 training samples, 2 broken in different ways (a truncated image, a non-rigid w2c): one epoch trains on
    the 8 others, counts the 2 in metrics/skipped_samples, and substitutes nothing."""
    import csv
    import json

    from conftest import write_sample

    for index in range(11):
        write_sample(tmp_path / "data", f"s{index}")
    (tmp_path / "data" / "s3" / "images" / "cam_002.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    cameras = tmp_path / "data" / "s7" / "opencv_cameras.json"
    content = json.loads(cameras.read_text())
    content["frames"][1]["w2c"][0][0] *= 2.0  # scaled: not a rotation
    cameras.write_text(json.dumps(content))
    (tmp_path / "data" / "train.txt").write_text("".join(f"s{i}\n" for i in range(10)))
    (tmp_path / "data" / "val.txt").write_text("s10\n")
    run_script(
        "train.py",
        tmp_path,
        None,
        "data=mouse",
        f"data.root={tmp_path / 'data'}",
        "data.on_error=skip",
        "data.image_size=16",
        "data.num_workers=0",
        "data.batch_size=5",
        "trainer.max_steps=2",
        "trainer.max_epochs=1",
        "loss=l2",
        "logger=csv",
        "trainer.log_every_n_steps=1",
        "data.normalization.up=[0,0,1]",
    )
    run = next((tmp_path / "logs" / "train" / "runs").glob("*"))
    rows = [r for r in csv.DictReader(open(next(run.glob("csv/version_*/metrics.csv")))) if r.get("metrics/iter")]
    assert float(rows[-1]["metrics/skipped_samples"]) == 2.0
    assert float(rows[-1]["metrics/trained_samples"]) == 8.0  # nothing substituted for the 2
