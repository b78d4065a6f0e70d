"""One preemption story under SLURM: SIGUSR2 -> last.ckpt at a step boundary -> ``scontrol requeue`` -> the next
attempt resumes from it in the same run directory.

SLURM sends SIGUSR2 ``--signal=USR2@<s>`` before the time limit, and a preempting scheduler (or ``scancel
--signal=USR2``) sends it to every process of the job step: each rank and each DataLoader worker. Only rank 0's main
process acts on it, and all it does in the handler is note the time; the decision is taken at the next step boundary,
where all ranks agree on it through one all-reduce of a flag. Then:

1. ``last.ckpt`` is written (by ``SaveLastOnExit`` at the end of ``fit``, atomically; by this callback when that
   callback is not configured), with the global step, the optimizer, the scheduler and the sample counters;
2. ``requeue.json`` beside it counts the time-limit requeues; past ``max_timeouts``
   (``hydra.launcher.max_num_timeout``) the job is not requeued and ends with one line saying so;
3. rank 0 runs ``scontrol requeue``, and every rank leaves with :class:`JobRequeued` (a ``SystemExit``: submitit
   records no result, so the sweep waits for the next attempt, and Hydra's sweep does not count it as a failure).

The next attempt (``SLURM_RESTART_COUNT`` >= 1) starts in the same run directory: the submitit launcher re-runs the
pickled job, whose sweep directory was resolved once; a plain ``sbatch`` run's directory is named after the job
(``runs/slurm-<job>``, see ``gslrm.config``). :func:`resume_checkpoint` finds the checkpoint there, and the wandb id
beside it continues the same wandb run.

Why this and not submitit's or Lightning's own handler (both were installed before, and neither worked): submitit's
handler runs in every process that inherits it (DataLoader workers raced on its pickle and wrote ``FAILED.txt``), it
saves nothing of the trainer's, and it does not exist under a plain ``sbatch``. Lightning's (``SLURMEnvironment(
auto_requeue=True)``) saves from inside the signal handler, i.e. a collective checkpoint at whatever point each rank
happens to be (a hang risk under DDP), into ``hpc_ckpt_N.ckpt``; and it is skipped when another SIGUSR2 handler is
already installed, which is why no ``hpc_ckpt`` was ever written under submitit. So the trainer keeps Lightning's
SLURM environment for the ranks, with its auto-requeue off, and this callback replaces submitit's handler.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from gslrm import slurm

log = logging.getLogger(__name__)

__all__ = ["RequeueOnSignal", "JobRequeued", "RunDirInUseError", "resume_checkpoint", "STATE_FILE"]

STATE_FILE = "requeue.json"  # beside last.ckpt: {"job", "step", "requeues", "timeouts"}


class JobRequeued(SystemExit):
    """This attempt saved its checkpoint and asked SLURM to run the job again."""


class RunDirInUseError(FileExistsError):
    """A new training (not a restart) in a SLURM job's run directory that already holds another training's
    checkpoints."""


def read_state(checkpoint_dir: Path) -> dict:
    path = checkpoint_dir / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {"requeues": 0, "timeouts": 0}


def resume_checkpoint(checkpoint_dir: Path) -> str | None:
    """The checkpoint a restarted SLURM job continues from: the newest readable one in its run directory, when SLURM
    restarted the job (requeue, node failure) or this trainer requeued it. None for a first attempt with an empty
    directory; a first attempt that finds another training's checkpoints fails with one line instead of
    overwriting them (a second ``train.py`` in one batch job: give it its own ``hydra.run.dir``)."""
    from gslrm.runs import newest_readable_checkpoint

    if slurm.job_id() is None or not checkpoint_dir.is_dir():
        return None
    restarted = slurm.restart_count() > 0 or (checkpoint_dir / STATE_FILE).is_file()
    newest, passed_over = newest_readable_checkpoint(checkpoint_dir)
    for path, reason in passed_over:
        log.warning("skipping unreadable %s: %s", path, reason)
    if newest is None:
        return None
    if not restarted:
        raise RunDirInUseError(
            f"{checkpoint_dir} already holds checkpoints of another training in SLURM job {slurm.job_id()}: "
            "set hydra.run.dir=... for this one, or ckpt_path=... to continue that one"
        )
    state = read_state(checkpoint_dir)
    log.info(
        "SLURM job %s, restart %d: resuming from %s (requeued %d times, %d at the time limit)",
        slurm.job_id(),
        slurm.restart_count(),
        newest,
        state["requeues"],
        state["timeouts"],
    )
    return str(newest)


class RequeueOnSignal(Callback):
    """Under SLURM, turn SIGUSR2 into checkpoint + requeue (see the module docstring). Does nothing elsewhere.

    ``checkpoint_path``: the ``last.ckpt`` the next attempt resumes from. ``max_timeouts``: requeues after the time
    limit allowed per job (preemptions do not count, as in submitit). ``signal_name``: the signal SLURM is asked to
    send (``--signal=USR2@120``; submitit's choice too).
    """

    def __init__(self, checkpoint_path: str, max_timeouts: int = 5, signal_name: str = "SIGUSR2") -> None:
        self.checkpoint_path = Path(checkpoint_path)
        self.max_timeouts = int(max_timeouts)
        self.signum = signal.Signals[signal_name]
        self.signalled_at: float | None = None  # set by the handler, in rank 0's main process only
        self.stop_step: int | None = None
        self._pid: int | None = None
        self._previous_handler = None

    # -- the signal ---------------------------------------------------------------------------------------------
    def arm(self) -> None:
        """Install the handler in this (main) process, before any DataLoader worker is forked: the workers inherit
        it and ignore the signal by their pid. It replaces submitit's handler (which would requeue from every
        process)."""
        if self._pid is not None or slurm.job_id() is None:
            return
        self._pid = os.getpid()
        self._previous_handler = signal.signal(self.signum, self._on_signal)

    def disarm(self) -> None:
        if self._pid == os.getpid() and self._previous_handler is not None:
            signal.signal(self.signum, self._previous_handler)
        self._pid = None

    def _on_signal(self, signum: int, frame) -> None:
        # a DataLoader worker (forked: other pid) or another rank: rank 0 decides for everyone at the step boundary
        if os.getpid() != self._pid or slurm.global_rank() != 0:
            return
        if self.signalled_at is None:
            self.signalled_at = time.time()

    # -- Lightning hooks ----------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        self.arm()  # before validate_before_training's and fit's DataLoaders start their workers

    def on_train_batch_end(self, trainer: L.Trainer, module, outputs, batch, batch_idx: int) -> None:
        if self._pid is None:
            return
        # one boolean all-reduce per step under DDP: every rank stops after the same step
        if not trainer.strategy.reduce_boolean_decision(self.signalled_at is not None, all=False):
            return
        self.stop_step = trainer.global_step
        trainer.should_stop = True
        log.warning("%s received: stopping after step %d to checkpoint and requeue", self.signum.name, self.stop_step)

    # -- after fit ----------------------------------------------------------------------------------------------
    def after_fit(self, trainer: L.Trainer) -> None:
        """Called by train.py once ``fit`` has returned: requeue (rank 0) and leave, or end the job if the time-limit
        requeues are spent. Raises :class:`JobRequeued` on every rank when the job was requeued."""
        from gslrm.lit.callbacks import SaveLastOnExit

        if self.stop_step is None:
            self.disarm()
            return
        if not any(
            isinstance(callback, SaveLastOnExit) and callback.path == self.checkpoint_path
            for callback in trainer.callbacks
        ):
            trainer.save_checkpoint(self.checkpoint_path)
        requeued = False
        if trainer.is_global_zero:
            try:
                requeued = self._requeue_or_end()
            except (OSError, ValueError, subprocess.SubprocessError) as error:  # the other ranks wait on the broadcast
                message = "could not requeue SLURM job %s (%s): continue it with ckpt_path=%s"
                log.error(message, slurm.job_id(), error, self.checkpoint_path)
        requeued = bool(trainer.strategy.broadcast(requeued, src=0))
        self.disarm()
        if requeued:
            raise JobRequeued(0)

    def _requeue_or_end(self) -> bool:
        identifier = slurm.job_id()
        timed_out = slurm.has_timed_out(slurm.time_left_s(), slurm.time_limit_s())
        state = read_state(self.checkpoint_path.parent)
        timeouts = state["timeouts"] + int(timed_out)
        if timeouts > self.max_timeouts:
            log.warning(
                "SLURM job %s reached its time limit %d times (max_num_timeout=%d): not requeued; continue it with "
                "ckpt_path=%s",
                identifier,
                timeouts,
                self.max_timeouts,
                self.checkpoint_path,
            )
            return False
        state = {"job": identifier, "step": self.stop_step, "requeues": state["requeues"] + 1, "timeouts": timeouts}
        (self.checkpoint_path.parent / STATE_FILE).write_text(json.dumps(state))
        # logged before the request: SLURM kills this attempt's processes as soon as it takes the requeue, so a line
        # written after ``scontrol requeue`` returns is lost whenever the kill wins the race (it did, in CI)
        log.warning(
            "SLURM job %s requeued at step %d (%s; time-limit requeues %d of %d); the next attempt resumes from %s",
            identifier,
            self.stop_step,
            "time limit" if timed_out else "preempted",
            timeouts,
            self.max_timeouts,
            self.checkpoint_path,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        slurm.requeue(identifier)
        return True
