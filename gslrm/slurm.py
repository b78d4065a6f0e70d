"""Facts about the SLURM job this process runs in, read from SLURM's environment and its commands.

Everything here is plain Python (no torch): the run-directory resolver uses it while Hydra composes the config.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess

log = logging.getLogger(__name__)

__all__ = [
    "job_id",
    "is_batch_job",
    "restart_count",
    "global_rank",
    "local_rank",
    "in_step",
    "num_nodes",
    "tasks_per_node",
    "time_left_s",
    "time_limit_s",
    "has_timed_out",
    "requeue",
    "parse_duration",
]


def job_id() -> str | None:
    """The id ``scontrol`` takes for this job: ``<array job>_<task>`` for an array element (every Hydra sweep point
    submitted by the submitit launcher is one), else ``SLURM_JOB_ID``; None outside SLURM."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID") or None


def is_batch_job() -> bool:
    """True inside an ``sbatch`` job (its steps included): SLURM sets ``ENVIRONMENT=BATCH`` there, not in ``salloc``.
    Only a batch job can be requeued, so only a batch job gets a run directory named after it."""
    return job_id() is not None and os.environ.get("ENVIRONMENT") == "BATCH"


def restart_count() -> int:
    """How many times SLURM has restarted this job (requeue, node failure); 0 on its first attempt."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def global_rank() -> int:
    """This process's rank: ``SLURM_PROCID`` in a SLURM step (Lightning's SLURMEnvironment uses the same variable),
    else ``RANK`` or ``LOCAL_RANK`` (torchrun's, Lightning's own launcher's on one machine), else 0."""
    return _first_int("SLURM_PROCID", "RANK", "LOCAL_RANK")


def local_rank() -> int:
    """This task's rank on its node: ``SLURM_LOCALID`` in a SLURM step, else ``LOCAL_RANK`` (set by Lightning's and
    torchrun's launchers), else 0. Local rank 0 is the one process per node that fetches weights into a node's cache."""
    return _first_int("SLURM_LOCALID", "LOCAL_RANK")


def _first_int(*names: str) -> int:
    """The first of these environment variables that is set, as an int; 0 when none is."""
    return next((int(os.environ[name]) for name in names if os.environ.get(name)), 0)


def in_step() -> bool:
    """Whether the ranks come from SLURM: a task of an ``srun`` step (Lightning's ``SLURMEnvironment.detect`` rule:
    ``SLURM_NTASKS`` set and the job not named ``bash`` or ``interactive``)."""
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def num_nodes(default: int = 1) -> int:
    """The step's node count (``SLURM_NNODES``) where the ranks come from SLURM, else ``default``. Lightning refuses a
    ``num_nodes`` that differs from it, so ``trainer=ddp`` takes it from here."""
    value = os.environ.get("SLURM_NNODES")
    return int(value) if in_step() and value else default


def tasks_per_node(default: int) -> int:
    """Tasks (= ranks) on this node where the ranks come from SLURM: ``SLURM_NTASKS_PER_NODE``, or the first count
    of ``SLURM_TASKS_PER_NODE`` (``2(x2)``: 2 on each of 2 nodes); else ``default``."""
    if not in_step():
        return default
    if os.environ.get("SLURM_NTASKS_PER_NODE"):
        return int(os.environ["SLURM_NTASKS_PER_NODE"])
    match = re.match(r"\d+", os.environ.get("SLURM_TASKS_PER_NODE", ""))
    return int(match.group()) if match else default


def parse_duration(text: str) -> float | None:
    """Seconds in SLURM's ``[days-]hours:minutes:seconds`` / ``minutes:seconds`` / ``minutes`` notation; None for
    ``UNLIMITED``, ``NOT_SET``, ``INVALID`` and anything else that is not a duration."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if match is None:
        return None
    days, *parts = match.groups()
    numbers = [int(part) for part in parts if part is not None]
    if days is not None:  # days-hours[:minutes[:seconds]]
        numbers += [0] * (3 - len(numbers))
        hours, minutes, seconds = numbers
    elif len(numbers) == 3:
        hours, minutes, seconds = numbers
    elif len(numbers) == 2:
        hours, (minutes, seconds) = 0, numbers
    else:
        hours, minutes, seconds = 0, numbers[0], 0
    return float(((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds)


def _squeue_field(field: str) -> str | None:
    identifier = job_id()
    if identifier is None:
        return None
    try:
        result = subprocess.run(
            ["squeue", "--noheader", "--jobs", identifier, "--format", field],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as error:
        log.warning("could not ask squeue for job %s's %s: %s", identifier, field, error)
        return None
    return result.stdout.strip() or None


def time_left_s() -> float | None:
    """Seconds until this job's time limit (None: no limit, or squeue could not tell)."""
    text = _squeue_field("%L")
    return None if text is None else parse_duration(text)


def time_limit_s() -> float | None:
    text = _squeue_field("%l")
    return None if text is None else parse_duration(text)


def has_timed_out(time_left: float | None, time_limit: float | None) -> bool:
    """Whether a SIGUSR2 is the time-limit warning rather than a preemption: less than max(10 min, 20% of the limit)
    is left. The same rule as submitit's (a job counts as timed out after min(80% of its time, time - 10 min)), so
    ``hydra.launcher.max_num_timeout`` means here what it means there."""
    if time_left is None or time_limit is None:
        return False
    return time_left <= max(600.0, 0.2 * time_limit)


def requeue(identifier: str) -> None:
    """``scontrol requeue``: SLURM ends this attempt (SIGTERM, then SIGKILL after KillWait) and queues the job again
    with the same id and environment; the next attempt sees ``SLURM_RESTART_COUNT`` one higher."""
    subprocess.run(["scontrol", "requeue", identifier], check=True, timeout=60, capture_output=True, text=True)
