"""``python -m gslrm.bench.gpu_check --out DIR`` (``make gpu-check``): what a GPU machine should show, in one call.

Each stage runs as a process of its own with its own time limit, writes its log to ``DIR/<stage>.log`` and its
outcome (exit code, seconds, stopped at its limit or not) to ``DIR/summary.json`` as soon as it ends, so a machine
lent for minutes returns whatever finished. Stages, the most telling first:

- ``setup``: gsplat's CUDA kernels built (or loaded) and checked against the compiled CPU rasterizer (make gpu-setup);
- ``tests``: the GPU suite, ``pytest -m gpu`` (make test-gpu);
- ``train``: ``train.py`` with ``model=small`` in bf16-mixed at 128 px for 300 steps on the rodent data, validating
  every 50 (its metrics.csv is copied to ``DIR/train_metrics.csv``: the val PSNR curve);
- ``bench``: ``python -m gslrm.bench --device cuda --json DIR/gpu.json`` (written after each job).

Data: ``--rodent-root`` is the bench's dataset (48 samples, val 4, seed 0; the train stage uses it too) and
``--test-rodent`` the test suite's (4 samples, val 1, seed 3: ``GSLRM_TEST_RODENT``). Each is generated there when
missing, which needs the rodent extra (MuJoCo); a GPU node without it gets them generated elsewhere
(``python -m gslrm.data.rodent --out DIR --samples 48 --val-samples 4``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from gslrm.bench.gpu import BENCH_RODENT
from gslrm.data.rodent import generator_overrides

__all__ = ["STAGES", "stage_commands", "run_stage", "main"]

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("setup", "tests", "train", "bench")
DEFAULT_LIMITS = {"setup": 900, "tests": 900, "train": 600, "bench": 900}  # seconds; a first gsplat build is minutes


def train_overrides(rodent_root: str, steps: int = 300) -> list[str]:
    """The bf16 curve: model=small at 128 px (no progressive schedule), FaceLift's optimizer with a short warm-up,
    FaceLift's loss without the perceptual term (its VGG19 weights are not on a bare node), CSV metrics."""
    return [
        "model=small",
        "optim=default",
        "trainer=gpu",
        "trainer.precision=bf16-mixed",
        f"trainer.max_steps={steps}",
        "optim.warmup_steps=30",
        "loss.perceptual.weight=0",
        "logger=csv",
        f"data.root={rodent_root}",
        *generator_overrides(BENCH_RODENT),
        "data.image_size=128",
        "data.image_size_schedule=[]",
        "data.batch_size=8",
        "data.num_workers=6",
        "val_every=50",
        "vis_every=100000",
        "val_lpips=false",
        "task_name=gpu_check",
    ]


def stage_commands(out: Path, rodent_root: str, python: str = sys.executable) -> dict[str, list[str]]:
    gpu_tests = ["tests/test_gpu.py", "tests/test_render.py"]
    bench = ["--device", "cuda", "--json", str(out / "gpu.json"), "--rodent-root", rodent_root]
    return {
        "setup": [python, "-m", "gslrm.render.gsplat_kernels"],
        "tests": [
            python,
            "-m",
            "pytest",
            "-q",
            "-m",
            "gpu",
            "-s",
            "-p",
            "no:cacheprovider",
            "--durations=15",
            *gpu_tests,
        ],
        "train": [python, str(ROOT / "train.py"), *train_overrides(rodent_root)],
        "bench": [python, "-m", "gslrm.bench", *bench],
    }


def run_stage(command: list[str], log: Path, limit_s: float, env: dict[str, str]) -> dict:
    """Run one stage in its own process group (a limit stops its children too: DataLoader workers, DDP ranks)."""
    started = time.perf_counter()
    with open(log, "w") as handle:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = process.wait(timeout=limit_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            code, timed_out = process.wait(), True
    return {"returncode": code, "seconds": round(time.perf_counter() - started, 1), "timed_out": timed_out}


def _limits(text: str) -> dict[str, float]:
    limits = dict(DEFAULT_LIMITS)
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = 0.0
        if name not in STAGES or not seconds > 0:
            raise SystemExit(f"--limits: '{item}' is not STAGE=SECONDS with STAGE one of {', '.join(STAGES)}")
        limits[name] = seconds
    return limits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gslrm.bench.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="logs, summary.json, gpu.json, train_metrics.csv")
    parser.add_argument(
        "--stages", default=",".join(STAGES), help=f"comma-separated, in order (default: all of {STAGES})"
    )
    defaults = ",".join(f"{name}={limit}" for name, limit in DEFAULT_LIMITS.items())
    parser.add_argument("--limits", default="", help=f"STAGE=SECONDS,... per-stage time limits (default: {defaults})")
    parser.add_argument("--rodent-root", default=None, help="the bench's and train's dataset (default: DATA_DIR)")
    parser.add_argument("--test-rodent", default=None, help="the test suite's dataset (GSLRM_TEST_RODENT)")
    parser.add_argument("--runs", type=Path, default=None, help="train.py's run folders (default: OUT/runs)")
    args = parser.parse_args(argv)
    stages = [name for name in args.stages.split(",") if name]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise SystemExit(f"--stages: unknown {', '.join(unknown)} (known: {', '.join(STAGES)})")
    limits = _limits(args.limits)
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(os.environ.get("GSLRM_DATA_DIR", ROOT / "data"))
    rodent_root = str(Path(args.rodent_root or data_dir / "rodent-bench").resolve())
    env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_MODE=os.environ.get("WANDB_MODE", "offline"))
    env.setdefault("MUJOCO_GL", "egl")
    env.setdefault("PYOPENGL_PLATFORM", env["MUJOCO_GL"])
    runs = (args.runs or args.out / "runs").resolve()  # checkpoints: kept apart from what is sent back
    env["GSLRM_LOG_DIR"] = str(runs)
    if args.test_rodent:
        env["GSLRM_TEST_RODENT"] = str(Path(args.test_rodent).resolve())
    commands = stage_commands(args.out.resolve(), rodent_root)
    summary: dict = {"stages": {}}
    for name in stages:
        print(f"[gpu_check] {name}: limit {limits[name]:.0f} s", flush=True)
        outcome = run_stage(commands[name], args.out / f"{name}.log", limits[name], env)
        summary["stages"][name] = outcome
        if name == "train":
            metrics = sorted(runs.glob("gpu_check/runs/*/csv/version_*/metrics.csv"))
            if metrics:
                shutil.copy(metrics[-1], args.out / "train_metrics.csv")
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
        verdict = "stopped at its limit" if outcome["timed_out"] else f"exit {outcome['returncode']}"
        print(f"[gpu_check] {name}: {verdict} after {outcome['seconds']} s", flush=True)
    failed = [name for name, o in summary["stages"].items() if o["returncode"] != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
