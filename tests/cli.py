"""Run train.py / eval.py as users do: a process of its own (forked warm: tests/warm_python.py) with Hydra overrides,
logs under tmp_path/logs."""

import os
from pathlib import Path

import warm_python

ROOT = Path(__file__).resolve().parents[1]
TRAINED_IMAGE_SIZE = 16  # conftest.trained_run trains at this size


TEST_RODENT = dict(samples=4, val_samples=1, seed=3)  # conftest.rodent_root: 3 train + 1 val samples


def data_overrides(rodent_root) -> list[str]:
    """The session's small rodent dataset (conftest.rodent_root), loaded in-process."""
    from gslrm.data.rodent import generator_overrides

    return [
        f"data.root={rodent_root}",
        *generator_overrides(TEST_RODENT),
        "data.num_workers=0",
        "data.batch_size=1",
    ]


def run_script(script, tmp_path, rodent_root, *overrides, check=True, multirun=False, env=None):
    env = dict(
        os.environ, GSLRM_LOG_DIR=str(tmp_path / "logs"), WANDB_MODE="offline", WANDB_SILENT="true", **(env or {})
    )
    data = data_overrides(rodent_root) if rodent_root is not None else []
    arguments = [str(ROOT / script), *(["-m"] if multirun else []), *data, *overrides]
    result = warm_python.run(arguments, cwd=tmp_path, env=env, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{script} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result
