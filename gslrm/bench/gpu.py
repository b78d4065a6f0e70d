"""``python -m gslrm.bench --device cuda [--json FILE] [--quick]``: the GPU benchmark, measured side by side in one run.

- ``training``: steps/s and MFU of whole training steps (model forward + rendering every view + MSE + backward +
  AdamW) for ``tiny``, ``small`` and ``base`` (FaceLift's size: 512^2, 4 input and 6 rendered views, gradient
  checkpointing; ``base_nockpt`` without it), batch 2, bf16 autocast. MFU = the transformer's forward+backward FLOPs
  per second (recomputation by checkpointing not counted) / the bf16 matmul FLOP/s of a large ``torch.matmul``
  measured in the same run.
- ``rasterizer``: gsplat forward + backward against resolution and Gaussian count.
- ``memory``: peak memory of a ``small`` training step against views x resolution, plain and deferred rendering.
- ``loader``: samples/s of the rodent loader at 512^2 with ``num_workers`` 4 and 8, against what ``base`` consumes
  (batch / step time): the loader should deliver at least 1.5x.

Every job but the loader runs in a fresh process (``timing.run_job``), so peak memory is per job. ``run(device="cpu", quick=True)`` runs
the same code with small shapes: that is how the CPU test suite keeps it working.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gslrm.bench import timing
from gslrm.bench.timing import MODEL_SIZES, job_matmul, model_flops, random_gaussians, timed

__all__ = ["run", "table"]

BASE = dict(dim=1024, depth=24, head_dim=64)
# base with and without gradient checkpointing: at batch 2 on an 80+ GB card it fits without, and recomputing the
# forward costs a third more compute that MFU does not count
SIZES = MODEL_SIZES | {"base": BASE | dict(gradient_checkpointing=True), "base_nockpt": BASE}
MFU_TARGET, LOADER_TARGET = 0.35, 1.5
BENCH_RODENT = dict(samples=48, val_samples=4, seed=0)  # the loader's and predict.py's data (gpu_check's train too)


def _cameras(batch: int, views: int, resolution: int, device: str):
    from gslrm.cameras import turntable_cameras

    c2w, k = turntable_cameras(views, resolution, elevation_deg=20.0)
    return c2w.expand(batch, -1, -1, -1).to(device), k.expand(batch, -1, -1).to(device)


def job_train_step(
    size: str,
    resolution: int,
    batch: int,
    device: str,
    deferred: bool,
    repeats: int,
    input_views: int = 4,
    render_views: int = 6,
) -> dict:
    import torch

    from gslrm.model.gslrm import GSLRM, ModelConfig
    from gslrm.render import RenderConfig, render

    config = ModelConfig(**SIZES[size])
    model = GSLRM(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    c2w, k = _cameras(batch, render_views, resolution, device)
    images = torch.rand(batch, render_views, 3, resolution, resolution, device=device)
    settings = RenderConfig(deferred=deferred)

    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            out = model(images[:, :input_views], c2w[:, :input_views], k[:, :input_views])
            rendered = render(out.gaussians, c2w, k, resolution, resolution, settings=settings)
            loss = torch.nn.functional.mse_loss(rendered.rgb, images)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: cuBLAS/cuDNN heuristics, gsplat's kernels, the optimizer state
    seconds, peak = timed(step, device, repeats)
    tokens = input_views * (resolution // config.patch_size) ** 2 + config.num_token_gaussians
    return {
        "seconds": seconds,
        "peak_mib": peak,
        "flops": model_flops(config, tokens, batch),
        "batch": batch,
        "resolution": resolution,
        "deferred": deferred,
    }


def job_gsplat(gaussians: int, resolution: int, device: str, repeats: int) -> dict:

    from gslrm.render import render

    scene = random_gaussians(gaussians, device)
    c2w, k = _cameras(1, 4, resolution, device)

    def step():
        rendered = render(scene, c2w, k, resolution, resolution)
        (rendered.rgb.sum() + rendered.alpha.sum()).backward()

    step()
    seconds, peak = timed(step, device, repeats)
    return {"seconds": seconds, "peak_mib": peak, "views": 4}


def job_loader(root: str, resolution: int, workers: int, batches: int) -> dict:
    """Steady-state samples/s (worker start-up and the first batch excluded)."""
    from gslrm.data.datamodule import ViewDataModule
    from gslrm.data.dataset import DataConfig
    from gslrm.rig import NormalizationConfig

    config = DataConfig(
        root=root,
        image_size=resolution,
        batch_size=2,
        num_workers=workers,
        persistent_workers=workers > 0,
        normalization=NormalizationConfig(up=[0.0, 0.0, 1.0]),
    )
    datamodule = ViewDataModule(config)
    datamodule.setup("fit")
    count, first = 0, None
    while count < batches * 2:
        for batch in datamodule.train_dataloader():
            if first is None:
                first = time.perf_counter()
                continue
            count += batch["image"].shape[0]
            if count >= batches * 2:
                break
    return {"samples_per_second": count / (time.perf_counter() - first), "workers": workers}


def run(
    device: str = "cuda",
    quick: bool = False,
    predict_ckpt: str | None = None,
    rodent_root: str | None = None,
    progress: Callable[[dict], None] | None = None,
) -> dict:
    """Every section, side by side. ``rodent_root``: where the loader's and predict.py's rodent data is (generated
    there if it is not: a GPU node without MuJoCo gets it generated elsewhere), else a scratch folder. ``progress``
    gets the results so far after each job, so a run stopped at its time limit keeps what it measured."""
    import tempfile
    from pathlib import Path

    import torch

    from gslrm.data.rodent import ensure_dataset, generator_overrides

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "python -m gslrm.bench --device cuda: no CUDA device here (torch.cuda.is_available() is False)"
        )
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    repeats = 1 if quick else 5
    results: dict = {
        "device": device,
        "device_name": name,
        "training": {},
        "rasterizer": {},
        "memory": {},
        "loader": {},
    }
    cuda = device == "cuda"  # the bf16 peak a GPU trains at; the CPU quick run: fp32, small
    peak = timing.run_job(job_matmul, device, 8192 if cuda else 1024, "bfloat16" if cuda else "float32")
    results["matmul_peak"] = peak
    report = progress or (lambda _: None)
    shapes = [("tiny", 32)] if quick else [("tiny", 256), ("small", 256), ("base", 512), ("base_nockpt", 512)]
    for size, resolution in shapes:
        measured = timing.run_job(job_train_step, size, resolution, 2, device, False, repeats)
        measured["steps_per_second"] = 1.0 / measured["seconds"]
        measured["mfu"] = measured["flops"] / measured["seconds"] / peak["flops_per_second"]
        results["training"][f"{size}_{resolution}"] = measured
        report(results)
    counts = [2000] if quick else [16_000, 65_536, 262_144, 1_048_576]
    for resolution in [32] if quick else [128, 256, 512]:
        for gaussians in counts:
            results["rasterizer"][f"{gaussians}_{resolution}"] = {
                "gaussians": gaussians,
                "resolution": resolution,
            } | timing.run_job(job_gsplat, gaussians, resolution, device, repeats)
            report(results)
    grid = [(2, 32)] if quick else [(v, r) for r in (256, 512) for v in (2, 4, 6)]
    for views, resolution in grid:
        for deferred in (False, True):
            key = f"views{views}_res{resolution}_{'deferred' if deferred else 'plain'}"
            results["memory"][key] = {"views": views} | timing.run_job(
                job_train_step, "tiny" if quick else "small", resolution, 1, device, deferred, 1, min(views, 4), views
            )
            report(results)
    consumer = results["training"]["tiny_32" if quick else "base_512"]
    consumption = consumer["batch"] / consumer["seconds"]
    results["loader"]["consumption_samples_per_second"] = consumption
    with tempfile.TemporaryDirectory() as scratch:
        rodent = BENCH_RODENT | (dict(samples=12) if quick else {})
        folder = Path(rodent_root) if rodent_root else Path(scratch) / "rodent"
        root = ensure_dataset(folder, **rodent)
        generated = generator_overrides(rodent)
        for workers in (0, 2) if quick else (4, 8):
            measured = job_loader(str(root), consumer["resolution"], workers, batches=10 if quick else 60)
            measured["ratio_to_consumption"] = measured["samples_per_second"] / consumption
            results["loader"][f"workers{workers}"] = measured
            report(results)
        from gslrm.bench.sequence import job_predict

        # predict.py at the default 64 px: batch 1 (every sharding gives the same bits) and batch 16
        results["predict"] = job_predict(str(root), device, predict_ckpt, data_overrides=generated)
        report(results)
        results["predict_batch16"] = job_predict(
            str(root), device, predict_ckpt, batch_size=16, data_overrides=generated
        )
        report(results)
        if not quick:  # FaceLift's size: model=base at 512 px (its initial weights: the speed is a trained one's)
            results["predict_base_512"] = job_predict(
                str(root), device, None, image_size=512, frames=16, data_overrides=generated, model="base"
            )
            report(results)
    return results


def table(results: dict) -> str:
    peak = results["matmul_peak"]
    lines = [
        f"device: {results['device_name']}; {peak['dtype']} matmul peak {peak['flops_per_second'] / 1e12:.1f} TFLOP/s",
        "",
        "| training step, batch 2 | s/step | steps/s | model TFLOP/s | MFU | peak GiB |",
        "|---|---|---|---|---|---|",
    ]
    for key, m in results["training"].items():
        lines.append(
            f"| {key} | {m['seconds']:.3f} | {m['steps_per_second']:.2f} | {m['flops'] / m['seconds'] / 1e12:.1f} | "
            f"{m['mfu']:.2f} | {m['peak_mib'] / 1024:.1f} |"
        )
    lines += ["", "| gsplat fwd+bwd, 4 views | Gaussians | resolution | ms | peak MiB |", "|---|---|---|---|---|"]
    for key, m in results["rasterizer"].items():
        lines.append(
            f"| {key} | {m['gaussians']} | {m['resolution']} | {m['seconds'] * 1e3:.1f} | {m['peak_mib']:.0f} |"
        )
    lines += [
        "",
        "| training step memory, batch 1 | views | resolution | rendering | s | peak GiB |",
        "|---|---|---|---|---|---|",
    ]
    for key, m in results["memory"].items():
        lines.append(
            f"| {key} | {m['views']} | {m['resolution']} | {'deferred' if m['deferred'] else 'plain'} | "
            f"{m['seconds']:.2f} | {m['peak_mib'] / 1024:.2f} |"
        )
    from gslrm.bench.sequence import table_lines

    for key in ("predict", "predict_batch16", "predict_base_512"):
        if key in results:
            lines += table_lines(results[key])
    consumption = results["loader"]["consumption_samples_per_second"]
    lines += [
        "",
        f"| loader (rodent, batch 2) | samples/s | / consumption ({consumption:.1f} samples/s) |",
        "|---|---|---|",
    ]
    for key, m in results["loader"].items():
        if isinstance(m, dict):
            lines.append(f"| {key} | {m['samples_per_second']:.1f} | {m['ratio_to_consumption']:.2f} |")
    return "\n".join(lines)
