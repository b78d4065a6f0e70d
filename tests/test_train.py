"""train.py as users run it (subprocesses with CLI overrides): fast_dev_run, resume, sweeps, typos, overfitting."""

import csv
import math
import os

import pytest
import torch
import warm_python
from cli import ROOT, run_script


def run_train(tmp_path, rodent_root, *overrides, check=True, multirun=False):
    return run_script("train.py", tmp_path, rodent_root, *overrides, check=check, multirun=multirun)


def run_dirs(tmp_path, kind="runs"):
    return sorted((tmp_path / "logs" / "train" / kind).glob("*"))


def metrics(run_dir):
    with open(next(run_dir.glob("csv/version_*/metrics.csv"))) as handle:
        return list(csv.DictReader(handle))


def curve_rows(run_dir):
    with open(run_dir / "curve.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(
    "target, said",
    [
        # the cause's line and the key: Hydra's own last line ('full_key: trainer') was what train.py used to print
        ({"_target_": "builtins.int", "x": 3}, "'x' is an invalid keyword argument for int() (full_key: trainer)"),
        (
            {"_target_": "nope.Nope"},
            "Error loading 'nope.Nope': ModuleNotFoundError(\"No module named 'nope'\") (full_key: trainer)",
        ),
    ],
)
def test_a_failed_instantiation_is_said_by_its_cause_and_key(target, said):
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from gslrm.runs import reason

    with pytest.raises(InstantiationException) as caught:
        instantiate(OmegaConf.create({"trainer": target}).trainer)
    assert reason(caught.value) == said


@pytest.mark.slow  # starts a Python process (an entry point, a compile, a spawned job)
def test_fast_dev_run_through_train_py(tmp_path, rodent_root):
    result = run_train(tmp_path, rodent_root, "debug=fdr", "loss=l2", "logger=csv")
    assert "Traceback" not in result.stderr
    run = run_dirs(tmp_path)[-1]
    assert (run / "config_resolved.yaml").is_file() and (run / ".hydra" / "config.yaml").is_file()


@pytest.mark.slow  # starts a Python process (an entry point, a compile, a spawned job)
def test_typo_fails_at_start_naming_the_key(tmp_path, rodent_root):
    result = run_train(tmp_path, rodent_root, "loss.wieght=1", check=False)
    assert result.returncode != 0 and "wieght" in result.stderr
    assert not run_dirs(tmp_path)  # nothing started


@pytest.mark.slow  # starts a Python process (an entry point, a compile, a spawned job)
def test_typo_inside_a_term_fails_naming_the_key(tmp_path, rodent_root):
    result = run_train(tmp_path, rodent_root, "loss.ssim.wieght=1", check=False)
    assert result.returncode != 0 and "wieght" in result.stderr


@pytest.mark.slow  # starts a Python process (an entry point, a compile, a spawned job)
def test_a_value_the_config_rejects_is_one_line_naming_the_key(tmp_path, rodent_root):
    result = run_train(tmp_path, rodent_root, "loss.alpha.foreground_weight=0", check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output
    assert "loss.alpha.foreground_weight: expected > 0, not 0.0" in output


@pytest.mark.slow  # starts a Python process (an entry point, a compile, a spawned job)
def test_missing_vgg_weights_is_one_clear_line(tmp_path, rodent_root):
    env_home = tmp_path / "torch_home"
    os.environ["TORCH_HOME"] = str(env_home)
    try:
        result = run_train(tmp_path, rodent_root, "loss=facelift", "debug=fdr", check=False)
    finally:
        del os.environ["TORCH_HOME"]
    assert result.returncode == 1
    assert "vgg19-dcbb9e9d.pth" in result.stderr + result.stdout and "Traceback" not in result.stderr


@pytest.mark.slow  # starts a Python process (an entry point, a compile, a spawned job)
def test_mouse_data_without_root_is_one_clear_line(tmp_path):
    env = dict(os.environ, GSLRM_LOG_DIR=str(tmp_path / "logs"))
    result = warm_python.run([str(ROOT / "train.py"), "data=mouse"], cwd=tmp_path, env=env, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Missing mandatory value: data.root" in output and "Traceback" not in output


@pytest.mark.slow
def test_resume_continues_step_optimizer_and_wandb_run(tmp_path, rodent_root):
    common = [
        "loss=l2",
        "trainer.max_steps=6",
        "trainer.val_check_interval=3",
        "trainer.log_every_n_steps=1",
        "data.image_size=16",
        "validate_before_training=false",
    ]
    run_train(tmp_path, rodent_root, *common)
    first = run_dirs(tmp_path)[-1]
    state = torch.load(first / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == 6
    wandb_id = (first / "checkpoints" / "wandb_id.txt").read_text().strip()

    run_train(tmp_path, rodent_root, *common[1:], "loss=l2", "trainer.max_steps=10", "ckpt_path=last")
    second = [d for d in run_dirs(tmp_path) if d != first][-1]
    resumed = torch.load(second / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert resumed["global_step"] == 10
    steps = {int(s["step"]) for s in resumed["optimizer_states"][0]["state"].values()}
    assert steps == {10}  # AdamW's per-parameter step count continued from 6
    assert resumed["lr_schedulers"][0]["last_epoch"] == 10
    assert any(wandb_id in p.name for p in (second / "wandb").glob("offline-run-*"))  # the same wandb run id
    # validation every 3 steps: the first run's curve ends at its step 6; the second stopped at 10, between two
    # validations, so train.py validated its final weights and the curve ends where last.ckpt is
    assert [row["step"] for row in curve_rows(first)][-1] == "6"
    assert [row["step"] for row in curve_rows(second)][-2:] == ["9", "10"]
    assert not any(p.name.startswith("__") for p in second.iterdir())


@pytest.mark.slow
def test_multirun_sweep_each_job_own_dir_and_failures_isolated(tmp_path, rodent_root):
    run_train(
        tmp_path,
        rodent_root,
        "loss=l2",
        "logger=csv",
        "trainer.max_steps=2",
        "validate_before_training=false",
        "trainer.val_check_interval=2",
        "data.image_size=18,16",
        multirun=True,
    )
    sweep = run_dirs(tmp_path, "multiruns")[-1]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    # job 0 (18 px is not a multiple of the 4 px patch) failed and said why; job 1 still trained
    failed = (jobs[0] / "FAILED.txt").read_text()
    assert "multiple of patch_size" in failed.splitlines()[0]  # the reason leads, the traceback follows
    assert "Traceback" in failed and not failed.startswith("Traceback")
    assert (jobs[1] / "checkpoints" / "last.ckpt").is_file() and not (jobs[1] / "FAILED.txt").exists()
    assert "image_size: 16" in (jobs[1] / "config_resolved.yaml").read_text()


@pytest.mark.slow  # starts a Python process (an entry point, a compile, a spawned job)
def test_a_bad_choice_in_a_sweep_stops_it_naming_the_key(tmp_path, rodent_root):
    """Choices are checked when a job's config is composed: the sweep stops there, before that job trains."""
    result = run_train(tmp_path, rodent_root, "debug=fdr", "loss.alpha.kind=bogus,l2", multirun=True, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Error merging override loss.alpha.kind=bogus" in output
    assert "Invalid value 'bogus', expected one of [l1, l2, bce, iou]" in output
    assert not list((tmp_path / "logs").glob("train/multiruns/*/*/checkpoints"))


@pytest.mark.slow
def test_loss_weight_sweep_values_reach_the_jobs(tmp_path, rodent_root):
    run_train(tmp_path, rodent_root, "loss=masked", "logger=csv", "debug=fdr", "loss.ssim.weight=0,0.5", multirun=True)
    sweep = run_dirs(tmp_path, "multiruns")[-1]
    from omegaconf import OmegaConf

    configs = [OmegaConf.load(sweep / job / "config_resolved.yaml") for job in ("0", "1")]
    assert [c.loss.ssim.weight for c in configs] == [0.0, 0.5] and all(c.loss.ssim.masked for c in configs)


@pytest.mark.slow
def test_overfit_one_sample_loss_halves(tmp_path, rodent_root):
    single = tmp_path / "single"
    single.mkdir()
    (single / "train.txt").write_text(str(rodent_root / "sample_000000") + "\n")
    (single / "val.txt").write_text(str(rodent_root / "sample_000000") + "\n")
    run_train(
        tmp_path,
        rodent_root,
        "loss=l2",
        "logger=csv",
        f"data.root={single}",
        "data.generate=false",
        "trainer.max_steps=150",
        "trainer.val_check_interval=150",
        "trainer.log_every_n_steps=1",
        "optim.warmup_steps=10",
        "optim.lr=1e-3",
        "validate_before_training=false",
        "data.image_size=32",
    )
    rows = [r for r in metrics(run_dirs(tmp_path)[-1]) if r.get("train/loss")]
    losses = [float(r["train/loss"]) for r in rows]
    start, end = sum(losses[:5]) / 5, sum(losses[-10:]) / 10
    assert end <= 0.5 * start, (start, end)


@pytest.mark.slow
def test_ddp_inside_a_multirun_runs_each_job_once(tmp_path, rodent_root):
    """2 CPU ranks (gloo) per job in a 2-job sweep: each job's second rank runs that job only (no nested sweep),
    and the second job starts its own ranks (the first job's process group and launcher env are gone)."""
    run_train(
        tmp_path,
        rodent_root,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
        "loss=l2",
        "logger=csv",
        "data.image_size=16",
        "trainer.max_steps=3",
        "trainer.val_check_interval=3",
        "loss.ssim.weight=0,0.5",
        multirun=True,
    )
    sweeps = run_dirs(tmp_path, "multiruns")
    assert len(sweeps) == 1  # the child ranks did not start sweeps of their own
    for job in ("0", "1"):
        job_dir = sweeps[0] / job
        assert (job_dir / "train_ddp_process_1.log").is_file() and not (job_dir / "FAILED.txt").exists()
        state = torch.load(job_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert state["global_step"] == 3


@pytest.mark.slow  # starts a Python process (an entry point, a compile, a spawned job)
def test_rodent_depth_experiment_smoke(tmp_path, rodent_root):
    """The confidence/depth pipeline through train.py (ground-truth depth prior, gradient confidence), with the
    metric depth term on the same depth maps."""
    result = run_train(
        tmp_path,
        rodent_root,
        "experiment=rodent_depth",
        "loss.metric_depth.weight=0.5",
        "debug=fdr",
        "logger=csv",
        "data.image_size=16",
    )
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # starts a Python process (an entry point, a compile, a spawned job)
def test_depth_prior_without_depth_data_is_one_line_at_start(tmp_path, rodent_root):
    result = run_train(tmp_path, rodent_root, "experiment=rodent_depth", "data.load_depth=false", check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "loss.depth.estimator=ground_truth: set data.load_depth=true" in output
    assert "Traceback" not in output


@pytest.mark.slow  # starts a Python process (an entry point, a compile, a spawned job)
def test_bf16_mixed_training_on_cpu_is_finite(tmp_path, rodent_root):
    """The precision GPUs train in by default (bf16 autocast), here on CPU's autocast: the transformer, the
    perceptual and SSIM terms under autocast, the renderer forced back to fp32. CUDA's own run: make test-gpu."""
    run_train(
        tmp_path,
        rodent_root,
        "trainer.accelerator=cpu",
        "trainer.precision=bf16-mixed",
        "loss=facelift",
        "loss.perceptual.pretrained=false",
        "loss.ssim.weight=0.2",
        "loss.l2_warmup_steps=0",
        "logger=csv",
        "data.image_size=16",
        "trainer.max_steps=8",
        "val_every=8",
        "trainer.log_every_n_steps=1",
        "validate_before_training=false",
    )
    rows = metrics(run_dirs(tmp_path)[-1])
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    perceptual = [float(r["train/perceptual_loss"]) for r in rows if r.get("train/perceptual_loss")]
    assert len(losses) == 8 and all(map(math.isfinite, losses)) and perceptual and all(v > 0 for v in perceptual)
    assert [math.isfinite(float(r["val/psnr"])) for r in rows if r.get("val/psnr")] == [True]
    config = (run_dirs(tmp_path)[-1] / "config_resolved.yaml").read_text()
    assert "precision: bf16-mixed" in config
