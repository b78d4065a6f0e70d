"""The SLURM preemption logic without a cluster: durations, the time-limit rule, max_num_timeout, the signal handler's
rank/worker filter, the run directory's name and when a run resumes (tests/test_slurm.py runs it on a real one)."""

from __future__ import annotations

import json
import logging
import os
import signal
from types import SimpleNamespace

import pytest

from gslrm import slurm
from gslrm.config import run_name
from gslrm.lit import requeue as requeue_module
from gslrm.lit.requeue import STATE_FILE, JobRequeued, RequeueOnSignal, RunDirInUseError, resume_checkpoint


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1:23", 83.0),
        ("0:45", 45.0),
        ("2:03:04", 7384.0),
        ("1-00:00:00", 86400.0),
        ("3-04:05:06", 273906.0),
        ("UNLIMITED", None),
        ("NOT_SET", None),
        ("INVALID", None),
    ],
)
def test_squeue_durations(text, seconds):
    assert slurm.parse_duration(text) == seconds


def test_time_limit_rule_is_submitits():
    # 30 min job: the 10 minutes dominate (20% is 6 min)
    assert slurm.has_timed_out(599, 1800) and not slurm.has_timed_out(601, 1800)
    # 24 h job: 20% of the limit, 4.8 h, dominates the 10 minutes
    assert slurm.has_timed_out(4 * 3600, 86400) and not slurm.has_timed_out(5 * 3600, 86400)
    assert not slurm.has_timed_out(None, 3600) and not slurm.has_timed_out(30, None)  # no limit: a preemption


@pytest.fixture
def slurm_job(monkeypatch):
    for name in [n for n in os.environ if n.startswith("SLURM_") or n == "ENVIRONMENT"]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.setenv("ENVIRONMENT", "BATCH")
    return monkeypatch


def test_job_id_and_run_name(slurm_job):
    assert slurm.job_id() == "41" and run_name("%Y") == "slurm-41"
    slurm_job.setenv("SLURM_ARRAY_JOB_ID", "40")
    slurm_job.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert slurm.job_id() == "40_3" and run_name("%Y") == "slurm-40_3"  # scontrol's name for an array element
    slurm_job.delenv("ENVIRONMENT")  # salloc: not requeueable, runs keep their timestamps
    assert run_name("%Y").isdigit()


def test_resume_only_a_restarted_job_and_refuse_to_overwrite_another_training(slurm_job, tmp_path):
    folder = tmp_path / "checkpoints"
    assert resume_checkpoint(folder) is None  # first attempt, nothing there
    folder.mkdir()
    (folder / "last.ckpt").write_bytes(b"x")
    slurm_job.setattr("gslrm.lit.checkpoint_io.unreadable_reason", lambda path: None)
    with pytest.raises(RunDirInUseError, match="hydra.run.dir"):  # a second training of the same batch job
        resume_checkpoint(folder)
    slurm_job.setenv("SLURM_RESTART_COUNT", "1")  # requeued or restarted after a node failure
    assert resume_checkpoint(folder) == str(folder / "last.ckpt")
    slurm_job.delenv("SLURM_JOB_ID")
    assert resume_checkpoint(folder) is None  # outside SLURM: only ckpt_path=... resumes


def test_handler_acts_in_rank_zero_main_process_only(slurm_job, tmp_path):
    callback = RequeueOnSignal(str(tmp_path / "last.ckpt"))
    previous = signal.getsignal(signal.SIGUSR2)
    callback.arm()
    try:
        assert signal.getsignal(signal.SIGUSR2) == callback._on_signal
        slurm_job.setenv("SLURM_PROCID", "1")
        os.kill(os.getpid(), signal.SIGUSR2)
        assert callback.signalled_at is None  # another rank: rank 0 decides for all
        slurm_job.setenv("SLURM_PROCID", "0")
        callback._pid = os.getpid() + 1  # as seen from a forked DataLoader worker
        os.kill(os.getpid(), signal.SIGUSR2)
        assert callback.signalled_at is None
        callback._pid = os.getpid()
        os.kill(os.getpid(), signal.SIGUSR2)
        assert callback.signalled_at is not None
    finally:
        callback.disarm()
    assert signal.getsignal(signal.SIGUSR2) == previous


class _Trainer(SimpleNamespace):
    """What after_fit uses of a Lightning trainer: one process, no SaveLastOnExit configured."""

    def save_checkpoint(self, path):
        self.saved.append(str(path))


def _stopped(tmp_path, timeouts_so_far: int, max_timeouts: int):
    folder = tmp_path / "checkpoints"
    folder.mkdir(exist_ok=True)
    (folder / STATE_FILE).write_text(json.dumps({"requeues": timeouts_so_far, "timeouts": timeouts_so_far}))
    callback = RequeueOnSignal(str(folder / "last.ckpt"), max_timeouts=max_timeouts)
    callback.stop_step = 37
    strategy = SimpleNamespace(broadcast=lambda value, src=0: value)
    trainer = _Trainer(is_global_zero=True, strategy=strategy, callbacks=[callback], saved=[])
    return callback, trainer


def test_time_limit_requeue_counts_and_then_ends_with_one_line(slurm_job, tmp_path, caplog):
    requeued = []
    slurm_job.setattr(requeue_module.slurm, "requeue", requeued.append)
    slurm_job.setattr(requeue_module.slurm, "time_left_s", lambda: 40.0)  # the time-limit warning
    slurm_job.setattr(requeue_module.slurm, "time_limit_s", lambda: 3600.0)

    callback, trainer = _stopped(tmp_path, timeouts_so_far=1, max_timeouts=2)
    with pytest.raises(JobRequeued):
        callback.after_fit(trainer)
    assert requeued == ["41"] and trainer.saved == [str(callback.checkpoint_path)]
    state = json.loads((callback.checkpoint_path.parent / STATE_FILE).read_text())
    assert state == {"job": "41", "step": 37, "requeues": 2, "timeouts": 2}

    callback, trainer = _stopped(tmp_path, timeouts_so_far=2, max_timeouts=2)
    with caplog.at_level(logging.WARNING, logger="gslrm.lit.requeue"):
        callback.after_fit(trainer)  # returns: the job ends
    assert requeued == ["41"]  # not requeued a third time
    (line,) = [r.getMessage() for r in caplog.records if "not requeued" in r.getMessage()]
    assert "3 times (max_num_timeout=2)" in line and f"ckpt_path={callback.checkpoint_path}" in line
    assert trainer.saved == [str(callback.checkpoint_path)]  # the work is saved all the same


def test_preemption_does_not_count_against_max_num_timeout(slurm_job, tmp_path):
    requeued = []
    slurm_job.setattr(requeue_module.slurm, "requeue", requeued.append)
    slurm_job.setattr(requeue_module.slurm, "time_left_s", lambda: 20 * 3600.0)
    slurm_job.setattr(requeue_module.slurm, "time_limit_s", lambda: 24 * 3600.0)
    callback, trainer = _stopped(tmp_path, timeouts_so_far=0, max_timeouts=0)
    with pytest.raises(JobRequeued):
        callback.after_fit(trainer)
    assert requeued == ["41"]
    assert json.loads((callback.checkpoint_path.parent / STATE_FILE).read_text())["timeouts"] == 0


def test_a_failing_scontrol_ends_the_job_with_one_line(slurm_job, tmp_path, caplog):
    def refuse(identifier):
        raise OSError("scontrol: not found")

    slurm_job.setattr(requeue_module.slurm, "requeue", refuse)
    slurm_job.setattr(requeue_module.slurm, "time_left_s", lambda: None)
    slurm_job.setattr(requeue_module.slurm, "time_limit_s", lambda: None)
    callback, trainer = _stopped(tmp_path, timeouts_so_far=0, max_timeouts=5)
    with caplog.at_level(logging.ERROR, logger="gslrm.lit.requeue"):
        callback.after_fit(trainer)  # no JobRequeued: nothing will run this job again
    assert any("could not requeue SLURM job 41" in r.getMessage() for r in caplog.records)
