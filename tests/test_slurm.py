"""train.py and predict.py on a real (one-node) SLURM cluster that the session starts (tests/slurm_cluster.py): a
sweep through hydra/launcher=slurm, preemption and the time limit (checkpoint, requeue, resume), DDP over 2 SLURM
tasks from a plain sbatch script, a failing sweep job, and predict.py's 2 shards (one preempted) into one store.
Skipped only where the daemons cannot start (failed under CI=true). The launchers the tests start fork warm
(tests/warm_python.py); every SLURM job is a cold process, as on a cluster.

The seven scenarios are submitted together, as a lab's jobs share a cluster: the first test to run starts all of
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
import warm_python
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
PREEMPTION_STEPS, TIME_LIMIT_STEPS, DDP_STEPS, NODE_LOST_STEPS = 60, 80, 40, 40
LAYOUT_STEPS = 12
PREDICT_FRAMES = 16  # the predict scenario's recording: 4 one-frame chunks for each of its 4 workers
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


def _sweep(cluster, tmp_path, rodent_root, *overrides) -> warm_python.WarmProcess | subprocess.Popen:
    """``python train.py -m hydra/launcher=slurm ...`` in the background (it waits for its jobs); its SLURM jobs are
    named after ``tmp_path`` (``squeue --name``), so that concurrent scenarios find their own."""
    command = [
        str(ROOT / "train.py"),
        "-m",
        *LAUNCHER,
        f"hydra.launcher.name={tmp_path.name}",
        *data_overrides(rodent_root),
        *TRAINING,
        *overrides,
    ]
    return warm_python.start(command, cwd=tmp_path, env=_env(cluster, tmp_path), output=tmp_path / "sweep.log")


def _wait(process: warm_python.WarmProcess | subprocess.Popen, tmp_path: Path, timeout: float) -> None:
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
    even_root: Path  # 4 training samples, so that 2 ranks split an epoch exactly (3 would repeat one to even them)
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
    """``predict.py -m predict.shard=0,1 predict.num_shards=2 hydra.launcher.nodes=2 trainer=ddp`` over a 16-frame
    recording in 1-frame chunks: 2 jobs of 2 ranks each, one rank per node, 4 workers of 4 frames (shard 0's: chunks
    0, 4, 8, 12 and 2, 6, 10, 14), each chunk's write slowed to ~5 s (GSLRM_TEST_SLOW_CHUNK_WRITE); shard 0 sent
    SIGUSR2 once chunk 0 is stored. By then worker 0 has been handed frame 1 and at most frame 2 (the loop fetches
    one ahead), and the signal lands during frame 1's slow write, so frame 3 is never handed out: a frame is always
    left for the requeued attempt. (With 2 frames a worker fewer, every frame could be handed out before the signal:
    it was, in a loaded run.) And one process without SLURM into another store, the reference."""
    from test_inference import _five_input_checkpoint

    from gslrm.data.rodent import ensure_dataset

    tmp_path = scenario.folder
    root = ensure_dataset(tmp_path / "rodent", samples=PREDICT_FRAMES, val_samples=2, seed=5)
    ckpt = _five_input_checkpoint(tmp_path / "initial.ckpt", num_input_views=4)
    common = [
        f"ckpt_path={ckpt}",
        f"data.root={root}",
        f"data.generator.samples={PREDICT_FRAMES}",
        "data.generator.val_samples=2",
        "data.generator.seed=5",
        "data.image_size=16",
        "predict.frames_per_chunk=1",
        "predict.num_workers=0",
    ]
    env = _env(cluster, tmp_path)
    sweep = warm_python.start(
        [str(ROOT / "predict.py"), "-m", *LAUNCHER, f"hydra.launcher.name={tmp_path.name}"]
        + [*common, f"predict.out={tmp_path / 'sharded'}", "predict.num_shards=2", "predict.shard=0,1"]
        + ["hydra.launcher.nodes=2", "trainer=ddp", "trainer.accelerator=cpu"],
        cwd=tmp_path,
        env=env | {"GSLRM_TEST_SLOW_CHUNK_WRITE": "1.0"},  # ~5 s a chunk: the signal lands before shard 0 ends
        output=tmp_path / "sweep.log",
    )
    reference = warm_python.start(  # meanwhile: the signal below must not wait for it
        [str(ROOT / "predict.py"), *common, f"predict.out={tmp_path / 'one'}"],
        cwd=tmp_path,
        env={k: v for k, v in env.items() if not k.startswith("SLURM_")},
        output=tmp_path / "reference.log",
    )
    _wait_for_file("sharded/done/chunk_000000.json", tmp_path, timeout=240)
    names = cluster.run("squeue", "--noheader", f"--name={tmp_path.name}", "--format=%i", check=False).stdout.split()
    shard0 = next((job for job in names if job.endswith("_0")), min(names, default=None))
    assert shard0 is not None, f"no job of {tmp_path.name} running: {names}"
    cluster.run("scancel", "--signal=USR2", shard0)
    reference.wait(timeout=300)
    assert reference.returncode == 0, (tmp_path / "reference.log").read_text()[-3000:]
    _wait(sweep, tmp_path, timeout=400)
    scenario.facts.update(shard0=shard0)
    return scenario


def _even_data(root: Path) -> list[str]:
    """The data overrides of the DDP scenarios, for the dataset of ``even_root``."""
    overrides = data_overrides(root)
    return [item for item in overrides if not item.startswith("data.generator.samples=")] + ["data.generator.samples=5"]


def _sbatch(cluster, tmp_path: Path, layout: list[str], overrides: list[str], env: dict | None = None) -> str:
    """``sbatch docs/slurm/train.sbatch`` (no Hydra launcher) with SLURM options ``layout``; returns the job id. The
    job's output (every rank, every attempt) goes to ``tmp_path/slurm-<job>.out``."""
    submitted = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--job-name={tmp_path.name}",
            f"--chdir={ROOT}",
            *layout,
            "--gpus-per-node=0",
            "--cpus-per-task=1",
            "--time=60",
            f"--output={tmp_path / 'slurm-%j.out'}",
            str(ROOT / "docs" / "slurm" / "train.sbatch"),
            *overrides,
        ],
        env=_env(cluster, tmp_path) | {"GSLRM_PYTHON": sys.executable} | (env or {}),
        capture_output=True,
        text=True,
        check=True,
    )
    return submitted.stdout.strip()


def _wait_for_job_end(cluster, job_id: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while job_id in cluster.jobs():
        assert time.monotonic() < deadline, f"job {job_id} still queued after {timeout} s"
        time.sleep(0.5)


def _ddp_training(scenario: Scenario, steps: int) -> list[str]:
    return [
        "trainer.accelerator=cpu",  # one rank per SLURM task, trainer.devices and num_nodes from SLURM (trainer=ddp)
        *_even_data(scenario.even_root),
        *TRAINING[1:],
        f"trainer.max_steps={steps}",
        f"val_every={steps // 2}",
    ]


TWO_NODES = ["--nodes=2", "--ntasks-per-node=1"]


def _sbatch_ddp_scenario(cluster, scenario: Scenario, rodent_root) -> Scenario:
    """docs/slurm/train.sbatch on 2 nodes x 1 task (gloo ranks taken from SLURM), sent ``scancel --full
    --signal=USR2`` once the first checkpoint exists."""
    tmp_path = scenario.folder
    overrides = [*_ddp_training(scenario, DDP_STEPS), "data.num_workers=1", *PACED]
    job_id = _sbatch(cluster, tmp_path, TWO_NODES, overrides)
    run = tmp_path / "logs" / "train" / "runs" / f"slurm-{job_id}"
    _wait_for_file("checkpoints/step_0000010.ckpt", run, timeout=180)
    cluster.run("scancel", "--full", "--signal=USR2", job_id)
    _wait_for_job_end(cluster, job_id)
    scenario.facts.update(job_id=job_id, run=run, log=tmp_path / f"slurm-{job_id}.out")
    return scenario


def _ddp_layouts_scenario(cluster, scenario: Scenario, rodent_root) -> Scenario:
    """The same 12-step training, seed and data three ways, at once: the launcher preset on 2 nodes x 1 task
    (``hydra.launcher.nodes=2 trainer=ddp``, wandb logger, a fresh compiled-extension cache that both nodes share),
    and the plain sbatch script on 1 node x 2 tasks, the reference."""
    tmp_path = scenario.folder
    training = _ddp_training(scenario, LAYOUT_STEPS)
    extension_cache = tmp_path / "ext"  # empty: the ranks of both nodes find no library and must build one
    env = _env(cluster, tmp_path) | {"GSLRM_EXT_DIR": str(extension_cache)}
    sweep = warm_python.start(
        [str(ROOT / "train.py"), "-m", *LAUNCHER, f"hydra.launcher.name={tmp_path.name}"]
        + ["hydra.launcher.nodes=2", "trainer=ddp", *training, "logger=wandb"],
        cwd=tmp_path,
        env=env,
        output=tmp_path / "sweep.log",
    )
    reference = tmp_path / "reference"
    reference.mkdir()
    job_id = _sbatch(cluster, reference, ["--nodes=1", "--ntasks-per-node=2"], training)
    _wait(sweep, tmp_path, timeout=400)
    _wait_for_job_end(cluster, job_id)
    scenario.facts.update(
        reference=reference / "logs" / "train" / "runs" / f"slurm-{job_id}",
        reference_log=reference / f"slurm-{job_id}.out",
        extension_cache=extension_cache,
    )
    return scenario


def _job_state(cluster, job_id: str) -> str:
    text = cluster.run("scontrol", "show", "job", job_id, check=False).stdout
    match = re.search(r"JobState=(\S+)", text)
    return match.group(1) if match else "GONE"


def _node_lost_scenario(cluster, scenario: Scenario, rodent_root) -> Scenario:
    """2 nodes x 1 task in the partition of nodes that may be lost; once the first checkpoint exists, node4 is lost:
    its slurmd and every process on it killed at once. The attempt ends (SLURM requeues a job after a node failure,
    or it ends with the survivor's line); node4 comes back, the job is requeued by hand if SLURM has not, and the
    next attempt resumes from the newest readable checkpoint."""
    tmp_path = scenario.folder
    overrides = [*_ddp_training(scenario, NODE_LOST_STEPS), *PACED]
    job_id = _sbatch(cluster, tmp_path, [*TWO_NODES, "--partition=lost"], overrides)
    run = tmp_path / "logs" / "train" / "runs" / f"slurm-{job_id}"
    _wait_for_file("checkpoints/step_0000010.ckpt", run, timeout=180)
    killed = cluster.lose_node("node4")
    deadline = time.monotonic() + 120
    while (state := _job_state(cluster, job_id)) in ("RUNNING", "COMPLETING"):
        assert time.monotonic() < deadline, f"job {job_id} still {state} 120 s after node4 was lost"
        time.sleep(0.5)
    cluster.restore_node("node4")
    if state not in ("PENDING", "REQUEUED"):  # ended rather than requeued by SLURM: the user's requeue
        cluster.run("scontrol", "requeue", job_id)
    _wait_for_job_end(cluster, job_id)
    scenario.facts.update(job_id=job_id, run=run, log=tmp_path / f"slurm-{job_id}.out", killed=killed, state=state)
    return scenario


SCENARIOS = {  # the longest first
    "predict_shards": _predict_shards_scenario,
    "node_lost": _node_lost_scenario,
    "sbatch_ddp": _sbatch_ddp_scenario,
    "ddp_layouts": _ddp_layouts_scenario,
    "preemption": _preemption_scenario,
    "time_limit": _time_limit_scenario,
    "sweep": _sweep_scenario,
}
CONCURRENT = 4


@pytest.fixture(scope="module")
def scenarios(request, slurm_cluster, tmp_path_factory, rodent_root):
    """The scenarios of the selected tests (``@pytest.mark.scenario``) started at once, each in its own thread; a
    test takes its own with ``.result()``."""
    from gslrm.data.rodent import ensure_dataset

    wanted = {
        marker.args[0] for item in request.session.items for marker in item.iter_markers("scenario") if marker.args
    }
    even_root = ensure_dataset(tmp_path_factory.mktemp("even") / "rodent", samples=5, val_samples=1, seed=3)
    # at most CONCURRENT at once, the longest first: all at once, some 30 cold Pythons on 2 cores, each scenario's
    # first checkpoint came later than its wait for it
    with ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
        futures: dict[str, Future] = {
            name: pool.submit(run, slurm_cluster, Scenario(tmp_path_factory.mktemp(name), even_root), rodent_root)
            for name, run in SCENARIOS.items()
            if name in wanted
        }
        yield futures
    assert slurm_cluster.wait_until_empty(60), slurm_cluster.jobs()


@pytest.mark.scenario("sweep")
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


@pytest.mark.scenario("preemption")
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


@pytest.mark.scenario("time_limit")
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


def _ranks(log_text: str) -> dict[int, tuple[str, int, int, str]]:
    """rank -> (host, node rank, local rank, master) from the module's line at the start of training."""
    found = re.findall(r"rank (\d+) of (\d+) on (\S+): node rank (\d+), local rank (\d+), master (\S+)", log_text)
    return {int(rank): (host, int(node), int(local), master) for rank, _, host, node, local, master in found}


def _epoch_shards(log_text: str) -> dict[int, dict[int, list[int]]]:
    """epoch -> rank -> the sample indices it trained that epoch (the module logs small shards whole)."""
    shards: dict[int, dict[int, list[int]]] = {}
    for epoch, rank, indices in re.findall(
        r"epoch (\d+): rank (\d+) of 2 trains on \d+ samples per epoch: \[([\d, ]*)\]", log_text
    ):
        shards.setdefault(int(epoch), {})[int(rank)] = [int(i) for i in indices.split(",")]
    return shards


def _assert_two_nodes(log_text: str, nodes: tuple[str, str] = ("node1", "node2"), *, cut_short: bool = False) -> None:
    """The 2 ranks ran on the 2 nodes, as SLURM laid them out, with the first the rendezvous master; each epoch's
    shards partition the 4 training samples: no sample twice, none missing.

    ``cut_short``: the attempt ended by a node killed hard; the last epoch's line of the killed rank may never have
    reached the log (CI saw epoch 5 with rank 0's shard alone), so that epoch only has to have no sample twice."""
    ranks = _ranks(log_text)
    assert {rank: fact[:3] for rank, fact in ranks.items()} == {0: (nodes[0], 0, 0), 1: (nodes[1], 1, 0)}, ranks
    assert {fact[3].split(":")[0] for fact in ranks.values()} == {nodes[0]}, ranks  # MASTER_ADDR: the node list's
    shards = _epoch_shards(log_text)
    assert shards, log_text[-3000:]
    last_epoch = max(shards)
    for epoch, by_rank in shards.items():
        trained = sorted(index for indices in by_rank.values() for index in indices)
        if cut_short and epoch == last_epoch:
            assert len(trained) == len(set(trained)) and set(trained) <= {0, 1, 2, 3}, (epoch, by_rank)
            continue
        assert set(by_rank) == {0, 1}, (epoch, by_rank)
        assert trained == [0, 1, 2, 3], (epoch, by_rank)


def _checkpoint_writers(log_text: str) -> set[str]:
    return set(re.findall(r"checkpoint written: \S+ \((rank \d+ on \S+)\)", log_text))


@pytest.mark.scenario("sbatch_ddp")
def test_ddp_over_two_nodes_from_a_plain_sbatch_script_survives_preemption(scenarios):
    """docs/slurm/train.sbatch --nodes=2: ranks and shards from SLURM on both nodes; ``scancel --full
    --signal=USR2``: both ranks stop after the same step, rank 0 alone writes last.ckpt and requeues, and the next
    attempt resumes at that step on both nodes, in the one run directory."""
    scenario = scenarios["sbatch_ddp"].result()
    job_id, run = scenario.facts["job_id"], scenario.facts["run"]
    log_text = scenario.facts["log"].read_text()
    _assert_two_nodes(log_text)
    stops, resumes = _stops_and_resumes(log_text)
    assert len(stops) == 2 and len(set(stops)) == 1 and resumes == stops, log_text[-3000:]  # one step, both ranks
    assert log_text.count(f"SLURM job {job_id} requeued at step") == 1  # rank 0 alone requeued
    assert log_text.count(f"SLURM job {job_id}, restart 1: resuming from") == 2  # on both nodes
    assert _checkpoint_writers(log_text) == {"rank 0 on node1"}
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == DDP_STEPS
    assert stops[0] + (DDP_STEPS - resumes[0]) <= DDP_STEPS + CHECKPOINT_EVERY  # no step trained twice
    assert list((scenario.folder / "logs" / "train" / "runs").iterdir()) == [run]  # one run dir for both ranks/attempts


def _submitit_logs(job_dir: Path) -> str:
    return "\n".join(path.read_text(errors="replace") for path in sorted(job_dir.glob(".submitit/*/*_log.*")))


@pytest.mark.scenario("ddp_layouts")
def test_ddp_over_two_nodes_from_the_launcher_equals_one_node_with_two_tasks(scenarios):
    """``hydra.launcher.nodes=2 trainer=ddp``: one rank per node, one run directory and one wandb run, the compiled
    renderer built once for both nodes (shared cache, file lock), and a final checkpoint equal, tensor for tensor,
    to the same training on 1 node x 2 tasks (gloo's sum of 2 gradients is the same either way)."""
    scenario = scenarios["ddp_layouts"].result()
    jobs = _job_dirs(scenario.folder)
    assert [job.name for job in jobs] == ["0"]
    job = jobs[0]
    log_text = _submitit_logs(job) + (job / "train.log").read_text()
    _assert_two_nodes(log_text)
    assert len(list(job.glob("wandb/offline-run-*"))) == 1
    assert _checkpoint_writers(log_text) == {"rank 0 on node1"}
    builds = re.findall(r"compiling the CPU renderer", log_text)
    assert len(builds) == 1, log_text[-3000:]
    assert len(list(scenario.facts["extension_cache"].glob("*.so"))) == 1
    reference_log = scenario.facts["reference_log"].read_text()
    assert {fact[0] for fact in _ranks(reference_log).values()} in ({"node1"}, {"node2"}), reference_log[-2000:]
    two_nodes = torch.load(job / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    one_node = torch.load(
        scenario.facts["reference"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert two_nodes["global_step"] == one_node["global_step"] == LAYOUT_STEPS
    assert two_nodes["state_dict"].keys() == one_node["state_dict"].keys()
    for name, tensor in two_nodes["state_dict"].items():
        assert torch.equal(tensor, one_node["state_dict"][name]), name


@pytest.mark.scenario("node_lost")
def test_a_lost_node_ends_the_attempt_and_the_next_resumes_from_the_newest_checkpoint(scenarios):
    """node4 killed hard mid-run: rank 0 on node3 ends its attempt with one line (no traceback), SLURM requeues the
    job for the node failure (or the test does, where the attempt ended first), and both ranks of the next attempt
    resume at the step of the newest checkpoint written before the loss."""
    scenario = scenarios["node_lost"].result()
    job_id, run = scenario.facts["job_id"], scenario.facts["run"]
    log_text = scenario.facts["log"].read_text()
    assert scenario.facts["killed"], "node4 had no processes to kill"
    first, _, second = log_text.partition(f"SLURM job {job_id}, restart 1: resuming from")
    assert second, log_text[-3000:]
    _assert_two_nodes(first, ("node3", "node4"), cut_short=True)
    assert "lost contact with another rank" in first, first[-3000:]  # the survivor's one line
    assert "Traceback" not in first, first[-3000:]
    resumed_from = Path(second.split()[0])
    assert resumed_from.parent == run / "checkpoints", second[:300]
    newest_step = max(int(step) for step in re.findall(r"checkpoint written: step_(\d+)\.ckpt", first))
    assert re.findall(r"resumed at step (\d+)", second) == [str(newest_step)] * 2, second[-3000:]
    _assert_two_nodes(second, ("node3", "node4"))
    assert _step(run / "checkpoints" / "last.ckpt") == NODE_LOST_STEPS


def _logs(folder: Path) -> str:
    return "\n".join(
        path.read_text(errors="replace")
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.suffix in (".log", ".out", ".err")
    )


def _assert_same_store(got: Path, expected: Path) -> None:
    import numpy as np
    import zarr

    manifest = json.loads((got / "manifest.json").read_text())
    assert manifest["complete"] and manifest["frames_done"] == PREDICT_FRAMES and manifest["frames_skipped"] == 0
    want, have = zarr.open_group(expected / "sequence.zarr", mode="r"), zarr.open_group(got / "sequence.zarr", mode="r")
    assert sorted(have.array_keys()) == sorted(want.array_keys())
    for name in want.array_keys():
        assert np.array_equal(have[name][:], want[name][:], equal_nan=True), name
    assert (got / "frames.csv").read_text() == (expected / "frames.csv").read_text()


@pytest.mark.scenario("predict_shards")
def test_two_predict_shards_on_slurm_one_preempted_give_one_process_store(scenarios):
    """Shard 0, sent SIGUSR2 after its first chunk, stores what it has, requeues and finishes in its next attempt;
    the two shards' store equals one process's, bit for bit, table included."""
    scenario = scenarios["predict_shards"].result()
    logs = _logs(scenario.folder / "logs")
    assert "SIGUSR2 received: no new frames" in logs, logs[-3000:]
    assert re.search(r"SLURM job \S+ requeued: the next attempt continues", logs), logs[-3000:]
    assert "Traceback" not in logs, logs[-3000:]
    _assert_same_store(scenario.folder / "sharded", scenario.folder / "one")


@pytest.mark.scenario("predict_shards")
def test_predict_over_two_nodes_spreads_the_frames_and_resumes_without_recomputing(scenarios):
    """Each shard's job runs one rank per node (worker = shard x 2 + rank): the 4 workers' first plans cover the 16
    frames once, on node1 and node2; shard 0's requeued attempt, again on both nodes, plans exactly the frames not
    stored yet (one of its ranks may have none: an empty loader on one rank must not stop the other); and the frames
    computed over every worker and attempt add up to 16: none computed twice."""
    scenario = scenarios["predict_shards"].result()
    pattern = (
        r"worker (\d) of 4 \(shard (\d), rank (\d) on (\S+)\): (\d+) frames to do in \d+ chunks \(\d+ of the "
        rf"session's {PREDICT_FRAMES} done already\)"
    )
    computed = r"predict: worker \d of 4: (\d+) frames in"
    first, later, computed_first, computed_later = [], [], [], []
    for path in sorted((scenario.folder / "logs").rglob("predict.log")):  # one per job (shard), attempts appended
        text = path.read_text()
        plans = re.findall(pattern, text)
        first, later = first + plans[:2], later + plans[2:]  # the first 2: attempt 1
        attempt1, _, attempt2 = text.partition("requeued: the next attempt continues")
        computed_first += [int(n) for n in re.findall(computed, attempt1)]
        computed_later += [int(n) for n in re.findall(computed, attempt2)]
    expected = [("0", "0", "0", "node1"), ("1", "0", "1", "node2"), ("2", "1", "0", "node1"), ("3", "1", "1", "node2")]
    assert sorted(plan[:4] for plan in first) == expected, (first, later)
    assert sum(int(plan[4]) for plan in first) == PREDICT_FRAMES, first  # the shards' plans cover the recording once
    assert sorted(plan[:4] for plan in later) == expected[:2], later  # shard 0 again, on both nodes
    # the requeued attempt plans exactly what the first left, and computes it: over all, no frame twice
    assert sum(int(plan[4]) for plan in later) == sum(computed_later) == PREDICT_FRAMES - sum(computed_first) > 0, later
