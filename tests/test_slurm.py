"""train.py and predict.py on a real (one-node) SLURM cluster that the session starts (tests/slurm_cluster.py): a
sweep through hydra/launcher=slurm, preemption and the time limit (checkpoint, requeue, resume), DDP over 2 SLURM
tasks from a plain sbatch script, a failing sweep job, and predict.py's 2 shards (one preempted) into one store. Skipped only where the daemons cannot start (failed under CI=true).

The four scenarios are submitted together, as a lab's jobs share a cluster: the first test to run starts all of
them (``scenarios``), each in a thread that submits, intervenes (a signal once the first checkpoint exists) and waits;
each test then waits for its own scenario and checks it. They run on one xdist worker (``xdist_group``), the cluster
having room for all of their jobs at once."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from cli import ROOT, data_overrides

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.xdist_group("slurm")]

LAUNCHER = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.tasks_per_node=1",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=60",
]
TRAINING = [
    "trainer=cpu",
    "loss=l2",
    "logger=csv",
    "data.image_size=16",
    "validate_before_training=false",
    "callbacks.visuals.vis_every=100000",
    "callbacks.model_checkpoint.every_n_train_steps=10",
]
CHECKPOINT_EVERY = 10
# each scenario's length: enough steps after the first checkpoint (when the test signals) to be still running then,
# and few enough to keep the suite short; the steps are paced to 0.1 s (PACED), so that at least 3-7 s of a run are
# left at step 10 however fast this machine is, and the waits leave the cores to the other scenarios
PREEMPTION_STEPS, TIME_LIMIT_STEPS, DDP_STEPS = 60, 80, 40
PACED = ["+callbacks.pace._target_=pacing.Pace", "+callbacks.pace.seconds=0.1"]


def _env(cluster, tmp_path) -> dict:
    path = os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))  # tests/pacing.py
    return dict(
        os.environ,
        SLURM_CONF=cluster.env["SLURM_CONF"],
        GSLRM_LOG_DIR=str(tmp_path / "logs"),
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        MUJOCO_GL=os.environ.get("MUJOCO_GL", "osmesa"),
        PYTHONPATH=path,
    )


def _sweep(cluster, tmp_path, rodent_root, *overrides) -> subprocess.Popen:
    """``python train.py -m hydra/launcher=slurm ...`` in the background (it waits for its jobs); its SLURM jobs are
    named after ``tmp_path`` (``squeue --name``), so that concurrent scenarios find their own."""
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        *LAUNCHER,
        f"hydra.launcher.name={tmp_path.name}",
        *data_overrides(rodent_root),
        *TRAINING,
        *overrides,
    ]
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


def _job_id(cluster, name: str, timeout: float = 60) -> str:
    """The id of the one SLURM job named ``name``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = cluster.run("squeue", "--noheader", f"--name={name}", "--format=%i", check=False).stdout.split()
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no SLURM job named {name} after {timeout} s")


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


@dataclass
class Scenario:
    """A scenario's folder and what happened while it ran (filled by its thread)."""

    folder: Path
    facts: dict = field(default_factory=dict)


def _sweep_scenario(cluster, scenario: Scenario, rodent_root) -> Scenario:
    sweep = _sweep(
        cluster,
        scenario.folder,
        rodent_root,
        "trainer.max_steps=12",
        "val_every=6",
        # 7 inputs of a 6-view rig: that job fails when it builds its data config, before training (a value the
        # schema rejects, such as loss.alpha.kind=bogus, stops the whole sweep before submission: test_train)
        "data.num_input_views=4,3,7",
    )
    _wait(sweep, scenario.folder, timeout=400)
    return scenario


def _preemption_scenario(cluster, scenario: Scenario, rodent_root) -> Scenario:
    # a DataLoader worker receives the signal too (it must not act on it); --full also signals the batch shell
    sweep = _sweep(
        cluster,
        scenario.folder,
        rodent_root,
        f"trainer.max_steps={PREEMPTION_STEPS}",
        f"val_every={PREEMPTION_STEPS // 2}",
        "data.num_workers=1",
        "logger=wandb",
        *PACED,
    )
    first = _wait_for_file("logs/train/multiruns/*/0/checkpoints/step_0000010.ckpt", scenario.folder, timeout=180)
    job_id = _job_id(cluster, scenario.folder.name)
    cluster.run("scancel", "--full", "--signal=USR2", job_id)
    _wait(sweep, scenario.folder, timeout=400)
    scenario.facts.update(first=first, job_id=job_id)
    return scenario


def _time_limit_scenario(cluster, scenario: Scenario, rodent_root) -> Scenario:
    """The launcher's time-limit settings, without waiting for the limit: the job asks SLURM for USR2 50 s before a
    5-minute limit, and a signal that comes with less than 10 minutes left counts as the time limit (submitit's rule),
    so the test sends the same signal as soon as the first checkpoint exists. Steps are paced to 0.1 s so that the
    run is still going then (SLURM's own signal would come 190 s or more into an attempt: never, here)."""
    sweep = _sweep(
        cluster,
        scenario.folder,
        rodent_root,
        f"trainer.max_steps={TIME_LIMIT_STEPS}",
        f"val_every={TIME_LIMIT_STEPS // 2}",
        "hydra.launcher.timeout_min=5",
        "hydra.launcher.signal_delay_s=50",
        "hydra.launcher.max_num_timeout=6",
        *PACED,
    )
    _wait_for_file("logs/train/multiruns/*/0/checkpoints/step_0000010.ckpt", scenario.folder, timeout=180)
    job_id = _job_id(cluster, scenario.folder.name)
    job = cluster.run("scontrol", "show", "job", job_id).stdout
    scripts = list(scenario.folder.glob("logs/train/multiruns/*/.submitit/*/*submission.sh"))
    cluster.run("scancel", "--signal=USR2", job_id)  # to the job's steps, as SLURM's --signal sends it
    _wait(sweep, scenario.folder, timeout=400)
    scenario.facts.update(job=job, scripts=[path.read_text() for path in scripts])
    return scenario


def _predict_shards_scenario(cluster, scenario: Scenario, rodent_root) -> Scenario:
    """``predict.py -m predict.shard=0,1 predict.num_shards=2 hydra/launcher=slurm`` over a 12-frame recording in
    2-frame chunks (shard 0: chunks 0, 2, 4), each chunk's write slowed to ~3 s (GSLRM_TEST_SLOW_CHUNK_WRITE), shard
    0 sent SIGUSR2 once its first chunk is stored (the loader has fetched a frame ahead by then, so the signal stops
    it with chunk 4 still to do); and one process without SLURM into another store, the reference."""
    from test_inference import _five_input_checkpoint

    from gslrm.data.rodent import ensure_dataset

    tmp_path = scenario.folder
    root = ensure_dataset(tmp_path / "rodent", samples=12, val_samples=2, seed=5)
    ckpt = _five_input_checkpoint(tmp_path / "initial.ckpt", num_input_views=4)
    common = [
        f"ckpt_path={ckpt}",
        f"data.root={root}",
        "data.generator.samples=12",
        "data.generator.val_samples=2",
        "data.generator.seed=5",
        "data.image_size=16",
        "predict.frames_per_chunk=2",
        "predict.num_workers=0",
    ]
    env = _env(cluster, tmp_path)
    log = open(tmp_path / "sweep.log", "w")  # noqa: SIM115 - closed by the process's end
    sweep = subprocess.Popen(
        [sys.executable, str(ROOT / "predict.py"), "-m", *LAUNCHER, f"hydra.launcher.name={tmp_path.name}"]
        + [*common, f"predict.out={tmp_path / 'sharded'}", "predict.num_shards=2", "predict.shard=0,1"],
        cwd=tmp_path,
        env=env | {"GSLRM_TEST_SLOW_CHUNK_WRITE": "0.3"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    reference = subprocess.run(
        [sys.executable, str(ROOT / "predict.py"), *common, f"predict.out={tmp_path / 'one'}"],
        cwd=tmp_path,
        env={k: v for k, v in env.items() if not k.startswith("SLURM_")},
        capture_output=True,
        text=True,
    )
    assert reference.returncode == 0, reference.stderr[-3000:]
    _wait_for_file("sharded/done/chunk_000000.json", tmp_path, timeout=180)
    names = cluster.run("squeue", "--noheader", f"--name={tmp_path.name}", "--format=%i", check=False).stdout.split()
    shard0 = next((job for job in names if job.endswith("_0")), min(names, default=None))
    assert shard0 is not None, f"no job of {tmp_path.name} running: {names}"
    cluster.run("scancel", "--signal=USR2", shard0)
    _wait(sweep, tmp_path, timeout=400)
    scenario.facts.update(shard0=shard0)
    return scenario


def _sbatch_ddp_scenario(cluster, scenario: Scenario, rodent_root) -> Scenario:
    """docs/slurm/train.sbatch, no Hydra launcher: 2 tasks = 2 gloo ranks taken from SLURM."""
    tmp_path = scenario.folder
    env = _env(cluster, tmp_path) | {"GSLRM_PYTHON": sys.executable}
    overrides = [
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        *data_overrides(rodent_root),
        *TRAINING[1:],
        f"trainer.max_steps={DDP_STEPS}",
        f"val_every={DDP_STEPS // 2}",
        "data.num_workers=1",
        *PACED,
    ]
    output = tmp_path / "slurm-%j.out"
    submitted = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--job-name={tmp_path.name}",
            f"--chdir={ROOT}",
            "--ntasks-per-node=2",
            "--gpus-per-node=0",
            "--cpus-per-task=1",
            "--time=60",
            f"--output={output}",
            str(ROOT / "docs" / "slurm" / "train.sbatch"),
            *overrides,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    job_id = submitted.stdout.strip()
    run = tmp_path / "logs" / "train" / "runs" / f"slurm-{job_id}"
    _wait_for_file("checkpoints/step_0000010.ckpt", run, timeout=180)
    cluster.run("scancel", "--signal=USR2", job_id)
    deadline = time.monotonic() + 300
    while job_id in cluster.jobs():
        assert time.monotonic() < deadline, f"job {job_id} still queued after 300 s"
        time.sleep(0.5)
    scenario.facts.update(job_id=job_id, run=run, log=Path(str(output).replace("%j", job_id)))
    return scenario


SCENARIOS = {
    "sweep": _sweep_scenario,
    "preemption": _preemption_scenario,
    "time_limit": _time_limit_scenario,
    "sbatch_ddp": _sbatch_ddp_scenario,
    "predict_shards": _predict_shards_scenario,
}


@pytest.fixture(scope="module")
def scenarios(slurm_cluster, tmp_path_factory, rodent_root):
    """Every scenario started at once, each in its own thread; a test takes its own with ``.result()``."""
    with ThreadPoolExecutor(max_workers=len(SCENARIOS)) as pool:
        futures: dict[str, Future] = {
            name: pool.submit(run, slurm_cluster, Scenario(tmp_path_factory.mktemp(name)), rodent_root)
            for name, run in SCENARIOS.items()
        }
        yield futures
    assert slurm_cluster.wait_until_empty(60), slurm_cluster.jobs()


def test_sweep_on_slurm_each_job_finishes_and_a_failing_one_is_recorded(scenarios, slurm_cluster):
    tmp_path = scenarios["sweep"].result().folder
    jobs = _job_dirs(tmp_path)
    assert [job.name for job in jobs] == ["0", "1", "2"]
    for job in jobs[:2]:
        assert not (job / "FAILED.txt").exists(), (job / "FAILED.txt").read_text()
        assert _step(job / "checkpoints" / "last.ckpt") == 12
    assert _final_val_psnr(jobs[0]) != _final_val_psnr(jobs[1])  # two different trainings
    failed = (jobs[2] / "FAILED.txt").read_text()
    assert "data.num_input_views" in failed  # the bad point failed alone, named its key
    assert "data.num_input_views: must be in 1..num_views=6" in failed.splitlines()[0]  # first line: the reason
    assert not list(jobs[2].glob("checkpoints/*.ckpt"))


def test_preempted_job_requeues_and_resumes_at_the_saved_step(scenarios):
    scenario = scenarios["preemption"].result()
    max_steps, job_id, first = PREEMPTION_STEPS, scenario.facts["job_id"], scenario.facts["first"]
    job = _job_dirs(scenario.folder)[0]
    assert first.parent.parent == job  # the requeued attempt ran in the same run directory
    log_text = (job / "train.log").read_text()
    stops, resumes = _stops_and_resumes(log_text)
    assert len(stops) == 1 and resumes == stops, log_text[-3000:]  # resumed exactly where it stopped
    assert f"SLURM job {job_id} requeued at step {stops[0]} (preempted" in log_text
    assert f"SLURM job {job_id}, restart 1: resuming from" in log_text
    assert "Traceback" not in log_text and "JobRequeued" not in log_text  # the first attempt ends in one line
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


def test_time_limit_signals_checkpoints_requeues_and_finishes(scenarios):
    scenario = scenarios["time_limit"].result()
    max_steps = TIME_LIMIT_STEPS
    # the launcher's signal_delay_s and timeout_min reached SLURM: the job runs with them
    assert "TimeLimit=00:05:00" in scenario.facts["job"], scenario.facts["job"]
    assert any("#SBATCH --signal=USR2@50" in script for script in scenario.facts["scripts"]), scenario.facts
    job = _job_dirs(scenario.folder)[0]
    log_text = (job / "train.log").read_text()
    stops, resumes = _stops_and_resumes(log_text)
    assert stops and resumes == stops, log_text[-3000:]
    # counted against the launcher's max_num_timeout (6 here, 5 by default)
    assert re.search(r"requeued at step \d+ \(time limit; time-limit requeues 1 of 6\)", log_text)
    assert _step(job / "checkpoints" / "last.ckpt") == max_steps
    assert not (job / "FAILED.txt").exists()


def test_ddp_over_two_slurm_tasks_from_a_plain_sbatch_script_survives_preemption(scenarios):
    """2 tasks = 2 gloo ranks taken from SLURM, one shard each, one run directory (runs/slurm-<job>) and one set of
    checkpoints; preempted, it resumes there."""
    scenario = scenarios["sbatch_ddp"].result()
    job_id, run = scenario.facts["job_id"], scenario.facts["run"]
    log_text = scenario.facts["log"].read_text()
    shard_lines = re.findall(r"rank (\d) of 2 trains on \d+ samples per epoch, first \[([\d, ]*)\]", log_text)
    shards = {int(rank): [int(i) for i in first.split(",")] for rank, first in shard_lines}
    assert set(shards) == {0, 1} and shards[0] != shards[1], log_text[-3000:]
    stops, resumes = _stops_and_resumes(log_text)
    assert len(set(stops)) == 1 and set(resumes) == set(stops), log_text[-3000:]  # both ranks stopped at one step
    assert log_text.count(f"SLURM job {job_id} requeued at step") == 1  # rank 0 alone requeued
    assert _step(run / "checkpoints" / "last.ckpt") == DDP_STEPS
    assert list((scenario.folder / "logs" / "train" / "runs").iterdir()) == [run]  # one run dir for both ranks/attempts


def test_two_predict_shards_on_slurm_one_preempted_give_one_process_store(scenarios):
    """Shard 0, sent SIGUSR2 after its first chunk, stores what it has, requeues and finishes in its next attempt;
    the two shards' store equals one process's, bit for bit, table included."""
    import numpy as np
    import zarr

    scenario = scenarios["predict_shards"].result()
    sharded, one = scenario.folder / "sharded", scenario.folder / "one"
    logs = "\n".join(
        path.read_text(errors="replace")
        for path in (scenario.folder / "logs").rglob("*")
        if path.is_file() and path.suffix in (".log", ".out", ".err")
    )
    assert "SIGUSR2 received: no new frames" in logs, logs[-3000:]
    assert re.search(r"SLURM job \S+ requeued: the next attempt continues", logs), logs[-3000:]
    assert "Traceback" not in logs, logs[-3000:]
    manifest = json.loads((sharded / "manifest.json").read_text())
    assert manifest["complete"] and manifest["frames_done"] == 12 and manifest["frames_skipped"] == 0
    expected = zarr.open_group(one / "sequence.zarr", mode="r")
    got = zarr.open_group(sharded / "sequence.zarr", mode="r")
    assert sorted(got.array_keys()) == sorted(expected.array_keys())
    for name in expected.array_keys():
        assert np.array_equal(got[name][:], expected[name][:], equal_nan=True), name
    assert (sharded / "frames.csv").read_text() == (one / "frames.csv").read_text()
