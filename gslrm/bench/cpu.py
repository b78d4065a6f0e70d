"""``python -m gslrm.bench [--json FILE] [--quick]`` (the CPU benchmark): speed and memory, measured side by side in one run.

- ``rasterizer``: the CPU renderers (compiled, torch tiled, dense all-pairs oracle), forward + backward, at
  (2k Gaussians, 64^2), (16k, 128^2) and two training shapes (``train``: 2 scenes x 4096 Gaussians, each seen by 6
  views at 32^2, the 32 px step; ``train64``: 2 x 16384 at 64^2, the default step), random Gaussians in the unit cube
  (scales 0.007-0.05) seen from FaceLift's orbit. Each is timed twice: ``render`` (projection + rasterization,
  gradients to the Gaussians; the compiled projection for the compiled backend, gsplat's torch projection for the
  others, as ``render()`` does) and ``raster`` (rasterization of the same splats, gradients to the 2D splats). The
  compiled backend's Gaussian-pixel pairs per second (tile intersections x 64 tile pixels, forward) are set against
  this machine's fp32 FLOP peak (a large matmul, measured in the same run) at ``FORWARD_FLOPS_PER_PAIR``.
- ``model``: forward + backward of the transformer (``tiny``, ``small``) on a batch of 2 x 4 input views, analytic
  FLOPs, and MFU = achieved FLOP/s / the fp32 matmul FLOP/s of a large ``torch.matmul`` measured in the same run.
- ``loader``: samples/s of the rodent training loader at the default config (32x32, batch 2) with 0 and 2 workers.
- ``memory``: peak memory of one training step of ``tiny`` (model + rendering every view + MSE + backward) against
  views (2, 4, 6) and resolution (64, 128, 256).

Every measurement runs in a fresh subprocess; on CPU the peak is the process's peak resident memory above the
baseline after setup (``/proc/self/status`` VmHWM after resetting it), on CUDA ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import time
from pathlib import Path

from gslrm.bench import timing
from gslrm.bench.timing import FORWARD_FLOPS_PER_PAIR, MODEL_SIZES, job_matmul, model_flops, random_gaussians, timed

__all__ = ["run", "table"]

# (scenes, views, Gaussians per scene, resolution); train: the 32 px training step (the shape the earlier figures
# used); train64: the default training step (2 scenes x 4 input views x 64^2 pixel Gaussians, 6 views rendered)
RASTER_CASES = {
    "2k_64": (1, 1, 2000, 64),
    "16k_128": (1, 1, 16000, 128),
    "train": (2, 6, 4096, 32),
    "train64": (2, 6, 16384, 64),
}


def job_rasterizer(case: str, method: str, repeats: int) -> dict:
    import torch

    from gslrm.cameras import turntable_cameras
    from gslrm.render.compiled import intersect_tiles, rasterize_compiled, simd_lanes
    from gslrm.render.compiled_projection import project_compiled
    from gslrm.render.oracle import rasterize_dense
    from gslrm.render.projection import Splats, project
    from gslrm.render.tiles import rasterize_tiles

    batch, views, n, resolution = RASTER_CASES[case]
    scene = random_gaussians(n, "cpu", batch)
    c2w, k = turntable_cameras(views, resolution, elevation_deg=20.0)
    c2w, k = c2w.expand(batch, -1, -1, -1), k.expand(batch, -1, -1)
    images = batch * views
    background = torch.tensor([[1.0, 1.0, 1.0, 0.0]]).expand(images, 4)
    rasterize = {"compiled": rasterize_compiled, "tiled": rasterize_tiles, "dense": rasterize_dense}[method]
    weights = torch.randn(images, resolution, resolution, 4, generator=torch.Generator().manual_seed(1))
    result = {}

    # as render() projects: compiled where the compiled rasterizer is, gsplat's torch code for the references
    projection = project_compiled if method == "compiled" else project

    def render_step():
        colors, alphas = rasterize(
            projection(scene, c2w, k, resolution, resolution), resolution, resolution, background
        )
        ((colors * weights).sum() + alphas.sum()).backward()
        result["render_image"] = torch.cat([colors, alphas], -1).detach()

    fixed = project(scene, c2w, k, resolution, resolution)
    differentiable = ("means2d", "conics", "features", "opacities")

    def raster_step(backward: bool = True):
        splats = Splats(**{f: getattr(fixed, f).detach().requires_grad_(f in differentiable) for f in vars(fixed)})
        colors, alphas = rasterize(splats, resolution, resolution, background)
        result["image"] = torch.cat([colors, alphas], -1).detach()
        if backward:
            loss = (colors * weights).sum() + alphas.sum()
            started = time.perf_counter()
            loss.backward()
            result.setdefault("backward_seconds", []).append(time.perf_counter() - started)

    seconds, peak = timed(render_step, "cpu", repeats)
    raster_seconds, _ = timed(raster_step, "cpu", repeats)
    # the images by value across processes: the rasterizer's from the same splats, render()'s from each projection
    out = {
        "seconds": seconds,
        "peak_mib": peak,
        "raster_seconds": raster_seconds,
        "image": result["image"].numpy(),
        "render_image": result["render_image"].numpy(),
    }
    if method == "compiled":
        forward_seconds, _ = timed(lambda: raster_step(backward=False), "cpu", repeats)
        # the backward pass on its own clock, the median of the timed runs (the first call warms up): the difference
        # of two separately timed medians went negative on a loaded machine
        backward = sorted(result["backward_seconds"][1:])
        ids = intersect_tiles(fixed, 8, -(-resolution // 8), -(-resolution // 8))[0]
        out |= {
            "forward_seconds": forward_seconds,
            "backward_seconds": backward[len(backward) // 2],
            "pairs": len(ids) * 64,
            "simd_lanes": simd_lanes(),
        }
    return out


def job_model(size: str, device: str, repeats: int) -> dict:
    import torch

    from gslrm.cameras import turntable_cameras
    from gslrm.model.gslrm import GSLRM, ModelConfig

    config = ModelConfig(**MODEL_SIZES[size])
    model = GSLRM(config).to(device)
    batch, views, resolution = 2, 4, 128
    c2w, k = turntable_cameras(views, resolution, elevation_deg=20.0)
    image = torch.rand(batch, views, 3, resolution, resolution, device=device)
    c2w, k = c2w.expand(batch, -1, -1, -1).to(device), k.expand(batch, -1, -1).to(device)

    def step():
        out = model(image, c2w, k)
        (out.gaussians.features.sum() + out.gaussians.means.sum()).backward()

    seconds, peak = timed(step, device, repeats)
    tokens = views * (resolution // config.patch_size) ** 2 + config.num_token_gaussians
    flops = model_flops(config, tokens, batch)
    return {"seconds": seconds, "peak_mib": peak, "flops": flops, "tokens": tokens, "batch": batch}


def job_memory(views: int, resolution: int, device: str, with_render: bool) -> dict:
    import torch

    from gslrm.cameras import turntable_cameras
    from gslrm.model.gslrm import GSLRM, ModelConfig
    from gslrm.render import render

    model = GSLRM(ModelConfig(**MODEL_SIZES["tiny"])).to(device)
    c2w, k = turntable_cameras(views, resolution, elevation_deg=20.0)
    c2w, k = c2w[None].to(device), k[None].to(device)
    image = torch.rand(1, views, 3, resolution, resolution, device=device)

    def step():
        out = model(image, c2w, k)
        if with_render:
            rendered = render(out.gaussians, c2w, k, resolution, resolution)
            torch.nn.functional.mse_loss(rendered.rgb, image).backward()
        else:
            (out.gaussians.features.sum() + out.gaussians.means.sum()).backward()

    seconds, peak = timed(step, device, 1)
    return {"seconds": seconds, "peak_mib": peak, "with_render": with_render}


def job_loader(root: str, workers: int) -> dict:
    """Steady-state samples/s read from disk over 3 epochs with persistent workers (the first batch, worker start-up,
    excluded)."""
    from gslrm.data.datamodule import ViewDataModule
    from gslrm.data.dataset import DataConfig
    from gslrm.rig import NormalizationConfig

    config = DataConfig(
        root=root,
        image_size=32,
        batch_size=2,
        num_workers=workers,
        persistent_workers=True,
        normalization=NormalizationConfig(up=[0.0, 0.0, 1.0]),
        cache_mb=0.0,  # the reading itself: with the cache, epochs after the first are served from memory
    )
    datamodule = ViewDataModule(config)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    count, first = 0, None
    for _ in range(3):
        for batch in loader:
            if first is None:
                first = time.perf_counter()
            else:
                count += batch["image"].shape[0]
    return {"samples_per_second": count / (time.perf_counter() - first), "samples": count}


def job_step_times(root: str, resolution: int, steps: int, *overrides: str, samples: int = 24) -> dict:
    """A default training run (``python train.py``, its loggers and callbacks included) of ``steps`` steps at
    ``resolution`` with ``callbacks.step_times`` on, plus ``overrides`` (later ones win): seconds per phase of a step
    (gslrm/lit/step_times.py)."""
    import json
    import os
    import subprocess
    import sys
    import tempfile

    from gslrm.losses.perceptual import vgg19_weights_available

    root_dir = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory() as logs:
        command = [
            sys.executable,
            str(root_dir / "train.py"),
            f"data.root={root}",
            f"data.generator.samples={samples}",
            "data.generator.val_samples=4",
            "data.generator.seed=0",
            f"data.image_size={resolution}",
            f"trainer.max_steps={steps}",
            "val_every=100000",
            "validate_before_training=false",
            "callbacks.step_times.enabled=true",
            *overrides,
        ]
        if not vgg19_weights_available():  # as make train: SSIM in the perceptual term's place
            command[2:2] = ["loss=no_vgg", "loss.perceptual.weight=0"]
        env = dict(os.environ, GSLRM_LOG_DIR=logs, WANDB_MODE="offline", WANDB_SILENT="true")
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
        found = list(Path(logs).glob("train/runs/*/step_times.json"))
        if result.returncode != 0 or not found:
            raise RuntimeError(f"train.py failed ({result.returncode}): {result.stderr[-2000:]}")
        return json.loads(found[0].read_text()) | {"perceptual": vgg19_weights_available()}


def run(quick: bool = False, predict_ckpt: str | None = None) -> dict:
    """The CPU benchmark (the GPU one: ``gslrm.bench.gpu.run``)."""
    import torch

    device = "cpu"
    repeats = 1 if quick else 3
    results: dict = {"device": device, "threads": torch.get_num_threads(), "rasterizer": {}, "model": {}, "memory": {}}
    cases = ["2k_64"] if quick else list(RASTER_CASES)
    max_diff, compiled_diff, render_diff = 0.0, 0.0, 0.0
    for key in cases:
        measured = {method: timing.run_job(job_rasterizer, key, method, repeats) for method in ("compiled", "tiled")}
        if not key.startswith("train"):  # the dense oracle at the training shapes takes minutes
            measured["dense"] = timing.run_job(job_rasterizer, key, "dense", 1)
        images = {method: value.pop("image") for method, value in measured.items()}
        renders = {method: value.pop("render_image") for method, value in measured.items()}
        render_diff = max(render_diff, float(abs(renders["compiled"] - renders["tiled"]).max()))
        reference = images.get("dense", images["tiled"])
        diff = float(abs(images["tiled"] - reference).max())
        compiled_diff = max(
            compiled_diff,
            float(abs(images["compiled"] - reference).max()),
            float(abs(images["compiled"] - images["tiled"]).max()),
        )
        max_diff = max(max_diff, diff)
        results["rasterizer"][key] = measured | {"max_abs_diff": diff}
        if "dense" in measured:
            results["rasterizer"][f"speedup_{key}"] = measured["dense"]["seconds"] / measured["tiled"]["seconds"]
        compiled, tiled = measured["compiled"], measured["tiled"]
        results["rasterizer"][f"compiled_speedup_{key}"] = tiled["raster_seconds"] / compiled["raster_seconds"]
        results["rasterizer"][f"render_speedup_{key}"] = tiled["seconds"] / compiled["seconds"]
        results["rasterizer"][f"pairs_per_second_{key}"] = compiled["pairs"] / compiled["forward_seconds"]
        results["rasterizer"][f"backward_over_forward_{key}"] = (
            compiled["backward_seconds"] / compiled["forward_seconds"]
        )
    results["rasterizer"]["compiled_max_abs_diff"] = compiled_diff
    # render(): the compiled projection against gsplat's torch projection as well (float rounding of the 2D means,
    # about 1e-7 relative, moves the images of steep Gaussians by more than the rasterizers' difference)
    results["rasterizer"]["render_max_abs_diff"] = render_diff
    results["rasterizer"]["max_abs_diff"] = max_diff
    peak_flops = timing.run_job(job_matmul, device)["flops_per_second"]
    results["model"]["matmul_flops_per_second"] = peak_flops
    for key in cases:
        pairs_per_second = results["rasterizer"][f"pairs_per_second_{key}"]
        results["rasterizer"][f"flop_fraction_{key}"] = pairs_per_second * FORWARD_FLOPS_PER_PAIR / peak_flops
    for size in ["tiny"] if quick else ["tiny", "small"]:
        measured = timing.run_job(job_model, size, device, repeats)
        measured["mfu"] = measured["flops"] / measured["seconds"] / peak_flops
        results["model"][size] = measured
    import tempfile

    from gslrm.data.rodent import ensure_dataset

    with tempfile.TemporaryDirectory() as scratch:
        samples = 8 if quick else 24  # quick: a smoke run of the code paths
        root = ensure_dataset(Path(scratch) / "rodent", samples=samples, val_samples=4, seed=0)
        # in this process: DataLoader workers forked from a spawned benchmark child ran ~20x slower here
        results["loader"] = {f"workers{w}": job_loader(str(root), w) for w in (0, 2)}
        # where the default step's time goes, at the default 32 px and at 64 px
        results["step"] = {}
        for resolution in (32,) if quick else (32, 64):
            measured = job_step_times(str(root), resolution, 10 if quick else 45, samples=samples)
            results["step"][f"res{resolution}"] = measured
            results["step"][f"render_share_{resolution}"] = measured["render_share"]
        # predict.py over the whole dataset (split=all): the default model at the default 64 px
        from gslrm.bench.sequence import job_predict

        generated = (f"data.generator.samples={samples}", "data.generator.val_samples=4", "data.generator.seed=0")
        results["predict"] = job_predict(str(root), device, predict_ckpt, data_overrides=generated)
    # the whole step (model + rendering every view) where the CPU rasterizer can do it in minutes; the model alone
    # everywhere (at FaceLift's initial Gaussian scale the CPU rendering cost grows ~ resolution^4)
    grid = [(2, 64), (4, 64)] if quick else [(v, r) for r in (64, 128, 256) for v in (2, 4, 6)]
    for views, resolution in grid:
        for with_render in (False, True) if resolution <= 64 else (False,):
            key = f"views{views}_res{resolution}" + ("_render" if with_render else "_model")
            results["memory"][key] = {"views": views, "resolution": resolution} | timing.run_job(
                job_memory, views, resolution, device, with_render
            )
    return results


def table(results: dict) -> str:
    raster = results["rasterizer"]
    lines = [
        f"device: {results['device']} ({results['threads']} threads)",
        "",
        "| rasterizer, fwd+bwd | compiled s | torch tiled s | dense s | rasterization speedup | render() speedup | "
        "Gaussian-pixel pairs/s (fwd) | of FLOP peak | bwd / fwd | max abs diff (torch, compiled) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, value in raster.items():
        if isinstance(value, dict):
            c, t, d = value["compiled"], value["tiled"], value.get("dense")
            dense = f"{d['seconds']:.3f}" if d else "-"
            lines.append(
                f"| {key} | {c['raster_seconds']:.4f} (render {c['seconds']:.4f}) | {t['raster_seconds']:.3f} (render {t['seconds']:.3f}) | {dense} | "
                f"{raster[f'compiled_speedup_{key}']:.1f}x | {raster[f'render_speedup_{key}']:.1f}x | {raster[f'pairs_per_second_{key}'] / 1e9:.2f} G | "
                f"{raster[f'flop_fraction_{key}']:.0%} | {raster[f'backward_over_forward_{key}']:.2f} | {value['max_abs_diff']:.1e}, {raster['compiled_max_abs_diff']:.1e} |"
            )
    lines += [
        "",
        f"render() with the compiled projection against gsplat's torch projection, max abs diff: "
        f"{raster['render_max_abs_diff']:.1e}; SIMD lanes (floats): {raster['train' if 'train' in raster else '2k_64']['compiled']['simd_lanes']}",
        "",
        f"fp32 matmul peak: {results['model']['matmul_flops_per_second'] / 1e9:.1f} GFLOP/s",
        "",
        "| model | fwd+bwd s | GFLOP | GFLOP/s | MFU | peak MiB |",
        "|---|---|---|---|---|---|",
    ]
    for size in ("tiny", "small"):
        if size in results["model"]:
            m = results["model"][size]
            lines.append(
                f"| {size} (2x4 views, 128^2) | {m['seconds']:.3f} | {m['flops'] / 1e9:.1f} | {m['flops'] / m['seconds'] / 1e9:.1f} | {m['mfu']:.2f} | {m['peak_mib']:.0f} |"
            )
    lines += ["", "| loader (rodent, 32^2, batch 2) | samples/s |", "|---|---|"]
    for key, value in results.get("loader", {}).items():
        lines.append(f"| {key} | {value['samples_per_second']:.1f} |")
    if "step" in results:
        from gslrm.lit.step_times import PHASES

        lines += [
            "",
            "| default step | " + " | ".join(PHASES) + " | step | render share |",
            "|---|" + "---|" * (len(PHASES) + 2),
        ]
        for resolution in (32, 64):
            if f"res{resolution}" not in results["step"]:
                continue
            m = results["step"][f"res{resolution}"]
            cells = " | ".join(f"{1000 * m['seconds'][name]:.0f} ms" for name in PHASES)
            lines.append(f"| {resolution} px | {cells} | {1000 * m['step_seconds']:.0f} ms | {m['render_share']:.0%} |")
    if "predict" in results:
        from gslrm.bench.sequence import table_lines

        lines += table_lines(results["predict"])
    lines += ["", "| tiny, batch 1 | views | resolution | what | seconds | peak MiB |", "|---|---|---|---|---|---|"]
    for key, m in results["memory"].items():
        what = "model + render all views + MSE, fwd+bwd" if m["with_render"] else "model fwd+bwd"
        lines.append(
            f"| {key} | {m['views']} | {m['resolution']} | {what} | {m['seconds']:.2f} | {m['peak_mib']:.0f} |"
        )
    return "\n".join(lines)
