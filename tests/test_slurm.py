"""train.py on a real (one-node) SLURM cluster that the session starts (tests/slurm_cluster.py): a sweep through
hydra/launcher=slurm, preemption and the time limit (checkpoint, requeue, resume), DDP over 2 SLURM tasks from a
plain sbatch script, and a failing sweep job. Skipped only where the daemons cannot start."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli import ROOT, data_overrides

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

LAUNCHER = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.tasks_per_node=1",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=60"]  # fmt: skip
TRAINING = ["trainer=cpu", "loss=l2", "logger=csv", "data.image_size=16", "validate_before_training=false",
            "callbacks.visuals.vis_every=100000", "callbacks.model_checkpoint.every_n_train_steps=10"]  # fmt: skip
CHECKPOINT_EVERY = 10


def _env(cluster, tmp_path) -> dict:
    path = os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))  # tests/pacing.py
    return dict(os.environ, SLURM_CONF=cluster.env["SLURM_CONF"], GSLRM_LOG_DIR=str(tmp_path / "logs"),
                WANDB_MODE="offline", WANDB_SILENT="true", MUJOCO_GL=os.environ.get("MUJOCO_GL", "osmesa"),
                PYTHONPATH=path)  # fmt: skip


def _sweep(cluster, tmp_path, rodent_root, *overrides) -> subprocess.Popen:
    """``python train.py -m hydra/launcher=slurm ...`` in the background (it waits for its jobs)."""
    command = [sys.executable, str(ROOT / "train.py"), "-m", *LAUNCHER, *data_overrides(rodent_root), *TRAINING,
               *overrides]  # fmt: skip
    log = open(tmp_path / "sweep.log", "w")  # noqa: SIM115 - closed by the process's end
    return subprocess.Popen(command, cwd=tmp_path, env=_env(cluster, tmp_path), stdout=log, stderr=subprocess.STDOUT)


def _wait(process: subprocess.Popen, tmp_path: Path, timeout: float) -> None:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"no end in {timeout} s:\n{(tmp_path / 'sweep.log').read_text()[-3000:]}") from None
    assert process.returncode == 0, (tmp_path / "sweep.log").read_text()[-3000:]


def _wait_for_file(pattern: str, folder: Path, timeout: float) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no {pattern} under {folder} after {timeout} s")


def _job_dirs(tmp_path: Path) -> list[Path]:
    sweep = next((tmp_path / "logs" / "train" / "multiruns").glob("*"))
    return sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())


def _step(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"]


def _stops_and_resumes(log_text: str) -> tuple[list[int], list[int]]:
    stops = [int(s) for s in re.findall(r"SIGUSR2 received: stopping after step (\d+)", log_text)]
    resumes = [int(s) for s in re.findall(r"resumed at step (\d+)", log_text)]
    return stops, resumes


def _final_val_psnr(job_dir: Path) -> float:
    rows = []
    for path in job_dir.glob("csv/version_*/metrics.csv"):
        with open(path) as handle:
            rows += [row for row in csv.DictReader(handle) if row.get("val/psnr")]
    return float(max(rows, key=lambda row: int(row["step"]))["val/psnr"])


def test_sweep_on_slurm_each_job_finishes_and_a_failing_one_is_recorded(slurm_cluster, tmp_path, rodent_root):
    sweep = _sweep(slurm_cluster, tmp_path, rodent_root, "trainer.max_steps=12", "val_every=6",
                   "loss.alpha.weight=1", "loss.alpha.kind=l2,l1,bogus")  # fmt: skip
    _wait(sweep, tmp_path, timeout=300)
    jobs = _job_dirs(tmp_path)
    assert [job.name for job in jobs] == ["0", "1", "2"]
    for job in jobs[:2]:
        assert not (job / "FAILED.txt").exists(), (job / "FAILED.txt").read_text()
        assert _step(job / "checkpoints" / "last.ckpt") == 12
    assert _final_val_psnr(jobs[0]) != _final_val_psnr(jobs[1])  # two different losses trained
    assert "loss.alpha.kind" in (jobs[2] / "FAILED.txt").read_text()  # the bad point failed alone, named its key
    assert not list(jobs[2].glob("checkpoints/*.ckpt"))
    assert slurm_cluster.wait_until_empty(30)


def test_preempted_job_requeues_and_resumes_at_the_saved_step(slurm_cluster, tmp_path, rodent_root):
    max_steps = 120
    # a DataLoader worker receives the signal too (it must not act on it); --full also signals the batch shell
    sweep = _sweep(slurm_cluster, tmp_path, rodent_root, f"trainer.max_steps={max_steps}", "val_every=60",
                   "data.num_workers=1", "logger=wandb")  # fmt: skip
    first = _wait_for_file("logs/train/multiruns/*/0/checkpoints/step_0000010.ckpt", tmp_path, timeout=120)
    (job_id,) = slurm_cluster.jobs()
    slurm_cluster.run("scancel", "--full", "--signal=USR2", job_id)
    _wait(sweep, tmp_path, timeout=300)

    job = _job_dirs(tmp_path)[0]
    assert first.parent.parent == job  # the requeued attempt ran in the same run directory
    log_text = (job / "train.log").read_text()
    stops, resumes = _stops_and_resumes(log_text)
    assert len(stops) == 1 and resumes == stops, log_text[-3000:]  # resumed exactly where it stopped
    assert f"SLURM job {job_id} requeued at step {stops[0]} (preempted" in log_text
    assert f"SLURM job {job_id}, restart 1: resuming from" in log_text
    last = job / "checkpoints" / "last.ckpt"
    assert _step(last) == max_steps
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert int(state["state_dict"]["trained_samples"]) == max_steps  # sample counter carried over (batch size 1)
    assert state["lr_schedulers"][0]["last_epoch"] == max_steps
    trained = stops[0] + (max_steps - resumes[0])
    assert trained <= max_steps + CHECKPOINT_EVERY
    assert not (job / "FAILED.txt").exists()
    assert (job / "checkpoints" / "step_0000010.ckpt").is_file()  # the first attempt's files are kept
    wandb_runs = sorted(job.glob("wandb/offline-run-*"))  # one per attempt, both continuing the same wandb run
    assert len(wandb_runs) == 2 and len({path.name.rsplit("-", 1)[1] for path in wandb_runs}) == 1, wandb_runs


def test_time_limit_signals_checkpoints_requeues_and_finishes(slurm_cluster, tmp_path, rodent_root):
    """--time=2 (minutes) with the warning 50 s before it. SLURM may send it up to 60 s early (sbatch(1)), so it comes
    10-70 s into each attempt: late enough that Python is running (a signal before any handler would kill the job),
    and steps paced to 0.1 s make the run (70 s) outlast that window on any machine."""
    max_steps = 700
    sweep = _sweep(slurm_cluster, tmp_path, rodent_root, f"trainer.max_steps={max_steps}", "val_every=350",
                   "hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=50",
                   "hydra.launcher.max_num_timeout=6", "+callbacks.pace._target_=pacing.Pace",
                   "+callbacks.pace.seconds=0.1")  # fmt: skip
    _wait(sweep, tmp_path, timeout=600)
    job = _job_dirs(tmp_path)[0]
    log_text = (job / "train.log").read_text()
    stops, resumes = _stops_and_resumes(log_text)
    assert stops and resumes == stops, log_text[-3000:]
    # counted against the launcher's max_num_timeout (6 here, 5 by default)
    assert re.search(r"requeued at step \d+ \(time limit; time-limit requeues 1 of 6\)", log_text)
    assert _step(job / "checkpoints" / "last.ckpt") == max_steps
    assert not (job / "FAILED.txt").exists()


def test_ddp_over_two_slurm_tasks_from_a_plain_sbatch_script_survives_preemption(slurm_cluster, tmp_path, rodent_root):
    """docs/slurm/train.sbatch, no Hydra launcher: 2 tasks = 2 gloo ranks taken from SLURM, one shard each, one run
    directory (runs/slurm-<job>) and one set of checkpoints; preempted, it resumes there."""
    env = _env(slurm_cluster, tmp_path) | {"GSLRM_PYTHON": sys.executable}
    overrides = ["trainer.accelerator=cpu", "trainer.devices=2", *data_overrides(rodent_root), *TRAINING[1:],
                 "trainer.max_steps=60", "val_every=30", "data.num_workers=1"]  # fmt: skip
    output = tmp_path / "slurm-%j.out"
    submitted = subprocess.run(
        ["sbatch", "--parsable", f"--chdir={ROOT}", "--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1",
         "--time=60", f"--output={output}", str(ROOT / "docs" / "slurm" / "train.sbatch"), *overrides],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    job_id = submitted.stdout.strip()
    run = tmp_path / "logs" / "train" / "runs" / f"slurm-{job_id}"
    _wait_for_file("checkpoints/step_0000010.ckpt", run, timeout=120)
    slurm_cluster.run("scancel", "--signal=USR2", job_id)
    assert slurm_cluster.wait_until_empty(240), slurm_cluster.jobs()

    log_text = Path(str(output).replace("%j", job_id)).read_text()
    shard_lines = re.findall(r"rank (\d) of 2 trains on \d+ samples per epoch, first \[([\d, ]*)\]", log_text)
    shards = {int(rank): [int(i) for i in first.split(",")] for rank, first in shard_lines}
    assert set(shards) == {0, 1} and shards[0] != shards[1], log_text[-3000:]
    stops, resumes = _stops_and_resumes(log_text)
    assert len(set(stops)) == 1 and set(resumes) == set(stops), log_text[-3000:]  # both ranks stopped at one step
    assert log_text.count(f"SLURM job {job_id} requeued at step") == 1  # rank 0 alone requeued
    assert _step(run / "checkpoints" / "last.ckpt") == 60
    assert list((tmp_path / "logs" / "train" / "runs").iterdir()) == [run]  # one run dir for both ranks/attempts
