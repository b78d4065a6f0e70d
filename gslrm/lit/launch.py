"""Hydra multirun x DDP: Lightning re-launches ``sys.argv`` for the other ranks, which under ``-m`` restarts the
whole sweep in every child. Here the children run just this job: its task overrides, its output directory."""

from __future__ import annotations

import sys

__all__ = ["install_multirun_safe_ddp_launch", "job_command"]


def job_command(local_rank: int) -> tuple[list[str], str]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd, to_absolute_path

    import __main__

    hydra = HydraConfig.get()
    if __main__.__spec__ is None:
        command = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    command += list(hydra.overrides.task)  # this job's overrides only: no "-m", no sweep lists
    command += [
        f"hydra.run.dir={hydra.runtime.output_dir}",
        f"hydra.job.name=train_ddp_process_{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, get_original_cwd()


def install_multirun_safe_ddp_launch() -> None:
    from lightning.pytorch.strategies.launchers import subprocess_script

    subprocess_script._hydra_subprocess_cmd = job_command
