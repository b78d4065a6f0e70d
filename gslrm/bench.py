"""``python -m gslrm.bench [--json FILE] [--quick]``: speed and memory, measured side by side in one run.

- ``rasterizer``: CPU tiled rasterizer vs the dense all-pairs oracle, forward + backward, at (2k Gaussians, 64^2) and
  (16k, 128^2), one view of random Gaussians in the unit cube (scales 0.007-0.05) seen from FaceLift's orbit.
- ``model``: forward + backward of the transformer (``tiny``, ``small``) on a batch of 2 x 4 input views, analytic
  FLOPs, and MFU = achieved FLOP/s / the fp32 matmul FLOP/s of a large ``torch.matmul`` measured in the same run.
- ``loader``: samples/s of the rodent training loader at the default config (32x32, batch 2) with 0 and 2 workers.
- ``memory``: peak memory of one training step of ``tiny`` (model + rendering every view + MSE + backward) against
  views (2, 4, 6) and resolution (64, 128, 256).

Every measurement runs in a fresh subprocess; on CPU the peak is the process's peak resident memory above the
baseline after setup (``/proc/self/status`` VmHWM after resetting it), on CUDA ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

__all__ = ["main"]

MODEL_SIZES = {"tiny": dict(dim=128, depth=4, head_dim=32), "small": dict(dim=384, depth=8, head_dim=64)}


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class _Peak:
    """Peak memory (MiB) of the code run inside the context, above what was resident when it started."""

    def __init__(self, device: str) -> None:
        self.device, self.mib = device, 0.0

    def __enter__(self) -> _Peak:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.base = _rss_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = _rss_kib("VmHWM") * 1024
        self.mib = (peak - self.base) / 2**20


def _timed(function, device: str, repeats: int) -> tuple[float, float]:
    """Peak memory of the first run, then the median seconds of ``repeats`` more runs."""
    import torch

    with _Peak(device) as peak:  # the first call: later ones reuse the allocator's memory and show no growth
        function()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2], peak.mib


def _random_gaussians(n: int, device: str):
    import torch

    from gslrm.model.gaussians import Gaussians

    g = torch.Generator().manual_seed(0)
    scene = Gaussians(
        means=(torch.rand(1, n, 3, generator=g) * 2 - 1) * 0.8,
        features=torch.randn(1, n, 1, 3, generator=g),
        scales=torch.exp(torch.empty(1, n, 3).uniform_(-5.0, -3.0, generator=g)),
        quats=torch.nn.functional.normalize(torch.randn(1, n, 4, generator=g), dim=-1),
        opacities=torch.rand(1, n, generator=g),
    )
    return scene.map(lambda t: t.to(device).requires_grad_(True))


def job_rasterizer(n: int, resolution: int, method: str, repeats: int) -> dict:
    import torch

    from gslrm.cameras import turntable_cameras
    from gslrm.render.oracle import rasterize_dense
    from gslrm.render.projection import project
    from gslrm.render.tiles import rasterize_tiles

    scene = _random_gaussians(n, "cpu")
    c2w, k = turntable_cameras(1, resolution, elevation_deg=20.0)
    background = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    rasterize = rasterize_tiles if method == "tiled" else rasterize_dense
    weights = torch.randn(1, resolution, resolution, 4, generator=torch.Generator().manual_seed(1))
    result = {}

    def step():
        splats = project(scene, c2w[None], k[None], resolution, resolution)
        colors, alphas = rasterize(splats, resolution, resolution, background)
        ((colors * weights).sum() + alphas.sum()).backward()
        result["image"] = torch.cat([colors, alphas], -1).detach()

    seconds, peak = _timed(step, "cpu", repeats)
    return {"seconds": seconds, "peak_mib": peak, "image": result["image"].numpy()}  # by value across processes


def _model_flops(config, tokens: int, batch: int) -> float:
    """Forward+backward FLOPs of the transformer trunk and heads: 3 x forward, forward = 2 x MACs."""
    d, depth = config.dim, config.depth
    per_token_macs = depth * 12 * d * d + 9 * config.patch_size**2 * d + d * config.patch_size**2 * 14
    attention_macs = depth * 2 * tokens * tokens * d  # QK^T and AV
    return 3.0 * 2.0 * batch * (per_token_macs * tokens + attention_macs)


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

    seconds, peak = _timed(step, device, repeats)
    tokens = views * (resolution // config.patch_size) ** 2 + config.num_token_gaussians
    flops = _model_flops(config, tokens, batch)
    return {"seconds": seconds, "peak_mib": peak, "flops": flops, "tokens": tokens, "batch": batch}


def job_matmul(device: str) -> dict:
    import torch

    size = 2048
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    seconds, _ = _timed(lambda: a @ b, device, 5)
    return {"flops_per_second": 2.0 * size**3 / seconds}


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

    seconds, peak = _timed(step, device, 1)
    return {"seconds": seconds, "peak_mib": peak, "with_render": with_render}


def job_loader(root: str, workers: int) -> dict:
    """Steady-state samples/s over 3 epochs with persistent workers (the first batch, worker start-up, excluded)."""
    from gslrm.data.datamodule import MouseDataModule
    from gslrm.data.mouse import DataConfig
    from gslrm.rig import NormalizationConfig

    config = DataConfig(root=root, image_size=32, batch_size=2, num_workers=workers, persistent_workers=True,
                        normalization=NormalizationConfig(up=[0.0, 0.0, 1.0]))  # fmt: skip
    datamodule = MouseDataModule(config)
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


def _child(queue, job: str, args: tuple) -> None:
    try:
        queue.put(("ok", globals()[job](*args)))
    except BaseException as error:  # noqa: BLE001 - reported to the parent
        queue.put(("error", f"{type(error).__name__}: {error}"))


def _run(job: str, *args):
    """Run one job in a fresh (non-daemonic: it may start DataLoader workers) process, for clean peak memory."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, job, args))
    process.start()
    status, value = queue.get()
    process.join()
    if status != "ok":
        raise RuntimeError(f"bench job {job}{args} failed: {value}")
    return value


def run(quick: bool = False) -> dict:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    repeats = 1 if quick else 3
    results: dict = {"device": device, "threads": torch.get_num_threads(), "rasterizer": {}, "model": {}, "memory": {}}
    cases = [(2000, 64)] if quick else [(2000, 64), (16000, 128)]
    max_diff = 0.0
    for n, resolution in cases:
        tiled = _run("job_rasterizer", n, resolution, "tiled", repeats)
        dense = _run("job_rasterizer", n, resolution, "dense", 1)
        diff = float(abs(tiled.pop("image") - dense.pop("image")).max())
        max_diff = max(max_diff, diff)
        key = f"{n // 1000}k_{resolution}"
        results["rasterizer"][key] = {"tiled": tiled, "dense": dense, "max_abs_diff": diff}
        results["rasterizer"][f"speedup_{key}"] = dense["seconds"] / tiled["seconds"]
    results["rasterizer"]["max_abs_diff"] = max_diff
    peak_flops = _run("job_matmul", device)["flops_per_second"]
    results["model"]["matmul_flops_per_second"] = peak_flops
    for size in ["tiny"] if quick else ["tiny", "small"]:
        measured = _run("job_model", size, device, repeats)
        measured["mfu"] = measured["flops"] / measured["seconds"] / peak_flops
        results["model"][size] = measured
    import tempfile

    from gslrm.data.rodent import ensure_dataset

    with tempfile.TemporaryDirectory() as scratch:
        root = ensure_dataset(Path(scratch) / "rodent", samples=24, val_samples=4, seed=0)
        # in this process: DataLoader workers forked from a spawned benchmark child ran ~20x slower here
        results["loader"] = {f"workers{w}": job_loader(str(root), w) for w in (0, 2)}
    # the whole step (model + rendering every view) where the CPU rasterizer can do it in minutes; the model alone
    # everywhere (at FaceLift's initial Gaussian scale the CPU rendering cost grows ~ resolution^4)
    grid = [(2, 64), (4, 64)] if quick else [(v, r) for r in (64, 128, 256) for v in (2, 4, 6)]
    for views, resolution in grid:
        for with_render in (False, True) if resolution <= 64 or device == "cuda" else (False,):
            key = f"views{views}_res{resolution}" + ("_render" if with_render else "_model")
            results["memory"][key] = {"views": views, "resolution": resolution} | _run(
                "job_memory", views, resolution, device, with_render
            )
    return results


def table(results: dict) -> str:
    lines = [f"device: {results['device']} ({results['threads']} threads)", "", "| rasterizer | tiled s | dense s | speedup | tiled MiB | dense MiB | max abs diff |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for key, value in results["rasterizer"].items():
        if isinstance(value, dict):
            t, d = value["tiled"], value["dense"]
            speedup = results["rasterizer"][f"speedup_{key}"]
            lines.append(f"| {key} | {t['seconds']:.3f} | {d['seconds']:.3f} | {speedup:.1f}x | {t['peak_mib']:.0f} | {d['peak_mib']:.0f} | {value['max_abs_diff']:.1e} |")  # fmt: skip
    lines += ["", f"fp32 matmul peak: {results['model']['matmul_flops_per_second'] / 1e9:.1f} GFLOP/s", "",
              "| model | fwd+bwd s | GFLOP | GFLOP/s | MFU | peak MiB |", "|---|---|---|---|---|---|"]  # fmt: skip
    for size in ("tiny", "small"):
        if size in results["model"]:
            m = results["model"][size]
            lines.append(f"| {size} (2x4 views, 128^2) | {m['seconds']:.3f} | {m['flops'] / 1e9:.1f} | {m['flops'] / m['seconds'] / 1e9:.1f} | {m['mfu']:.2f} | {m['peak_mib']:.0f} |")  # fmt: skip
    lines += ["", "| loader (rodent, 32^2, batch 2) | samples/s |", "|---|---|"]
    for key, value in results.get("loader", {}).items():
        lines.append(f"| {key} | {value['samples_per_second']:.1f} |")
    lines += ["", "| tiny, batch 1 | views | resolution | what | seconds | peak MiB |", "|---|---|---|---|---|---|"]
    for key, m in results["memory"].items():
        what = "model + render all views + MSE, fwd+bwd" if m["with_render"] else "model fwd+bwd"
        lines.append(
            f"| {key} | {m['views']} | {m['resolution']} | {what} | {m['seconds']:.2f} | {m['peak_mib']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gslrm.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    parser.add_argument("--quick", action="store_true", help="small cases only (a smoke run)")
    args = parser.parse_args(argv)
    results = run(quick=args.quick)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
