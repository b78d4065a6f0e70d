"""python -m gslrm.view.bench [--ckpt FILE --data-root DIR] [--training] [--json out.json] — the viewer's costs.

For a checkpoint's first validation sample (the ``python -m gslrm.view`` path) and for a FaceLift-size prediction
(1M Gaussians in a mouse-sized volume), sent whole and subsampled to ``viewer.max_splats``: seconds to get the viewer
ready (checkpoint, forward pass, conversion), seconds from opening the page in headless Chromium (SwiftShader: WebGL
on the CPU) to the first splats on screen, the bytes viser sends, and the memory of this process and the browser.
With ``--training``: the default run's step time with ``callbacks.viewer.enabled`` off and on.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gslrm.bench.timing import rss_kib

__all__ = ["measure_page", "facelift_size_scene"]


def facelift_size_scene(count: int = 1_000_000, seed: int = 0):
    """``count`` Gaussians the size and spread of a 4 x 512^2 pixel-aligned prediction of a mouse: an ellipsoid
    cloud 0.6 x 0.25 x 0.25 around the rig centre, small scales, random colours and opacities."""
    from gslrm.cameras import turntable_cameras
    from gslrm.model.gaussians import Gaussians
    from gslrm.view.viewer import ViewScene

    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(count, 3, generator=generator) * torch.tensor([0.3, 0.12, 0.12])
    gaussians = Gaussians(
        means=means[None],
        features=torch.randn(1, count, 1, 3, generator=generator) * 0.5,
        scales=torch.rand(1, count, 3, generator=generator) * 0.01 + 0.002,
        quats=torch.nn.functional.normalize(torch.randn(1, count, 4, generator=generator), dim=-1),
        opacities=torch.rand(1, count, generator=generator),
    )
    c2w, fxfycxcy = turntable_cameras(6, resolution=512, radius=2.7, elevation_deg=20.0)
    images = torch.ones(6, 4, 512, 512)
    return ViewScene(f"{count:,} Gaussians", gaussians, c2w.float(), fxfycxcy.float(), images, 4)


def measure_page(viewer, profile: Path, timeout_s: float = 300.0) -> dict:
    """Open the viewer's page in headless Chromium; seconds until the splats are drawn and the page settles."""
    from gslrm.view.browser import HeadlessChromium

    browser = HeadlessChromium(profile).start()
    try:
        started = time.perf_counter()
        browser.open(viewer.url)
        deadline = started + timeout_s
        try:
            while True:  # first: a frame with something drawn in the middle of the view
                shot = browser.screenshot(timeout_s=max(1.0, deadline - time.perf_counter())).astype(np.int16)
                height, width = shot.shape[:2]
                middle = shot[height // 3 : 2 * height // 3, width // 4 : width // 2]
                if (np.abs(middle - 255).max(axis=-1) > 24).mean() > 0.01:
                    break
                if time.perf_counter() > deadline:
                    raise TimeoutError
                time.sleep(0.1)
            first = time.perf_counter() - started
            browser.settled_screenshot(timeout_s=max(1.0, deadline - time.perf_counter()))
        except TimeoutError:  # the browser did not draw (or settle) in time: recorded, not fatal
            return {
                "first_splat_s": None,
                "settled_s": None,
                "timed_out_s": timeout_s,
                "browser_mb": round(browser.memory_mb(), 1),
            }
        return {
            "first_splat_s": round(first, 2),
            "settled_s": round(time.perf_counter() - started, 2),
            "browser_mb": round(browser.memory_mb(), 1),
        }
    finally:
        browser.stop()


def training_overhead(steps: int = 150, val_every: int = 25, rounds: int = 2) -> dict:
    """Mean seconds per training step (callbacks.step_times: the step alone, validation excluded) of the default
    run at 32 px with ``callbacks.viewer.enabled`` off and on, alternately, ``rounds`` times each; the viewer gets
    a new scene at every validation (no browser attached: its drawing happens on the user's machine)."""
    from gslrm.bench.cpu import job_step_times
    from gslrm.data.rodent import ensure_dataset

    root = ensure_dataset(
        Path(tempfile.mkdtemp(prefix="gslrm-view-bench-data-")) / "rodent", samples=24, val_samples=4, seed=0
    )
    results: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(rounds):
        for state in ("off", "on"):
            viewer = [f"val_every={val_every}", f"callbacks.viewer.enabled={state == 'on'}", "callbacks.viewer.port=0"]
            results[state].append(job_step_times(str(root), 32, steps, *viewer)["step_seconds"])
    row = {state: round(sum(values) / len(values), 4) for state, values in results.items()}
    row |= {"runs": results, "steps": steps, "val_every": val_every}
    print(json.dumps({"training_overhead": row}), flush=True)
    return row


def _row(label: str, make_viewer, profile: Path, page_timeout_s: float) -> dict:
    before = rss_kib("VmRSS") / 1024
    started = time.perf_counter()
    viewer = make_viewer()
    ready = time.perf_counter() - started
    try:
        row = {
            "case": label,
            "ready_s": round(ready, 2),
            "splats": len(viewer.splats),
            "total": viewer.splats.total,
            "server_mb": round(rss_kib("VmRSS") / 1024 - before, 1),
        }
        row["sent_mb"] = round(viewer.splats.centers.shape[0] * _BYTES_PER_SPLAT / 2**20, 1)
        row |= measure_page(viewer, profile, page_timeout_s)
    finally:
        viewer.stop()
    print(json.dumps(row), flush=True)
    return row


# what viser sends per splat: two 16-byte texels (centre 3 x f32 + 4 spare bytes; covariance upper triangle
# 6 x f16 + rgba 4 x u8)
_BYTES_PER_SPLAT = 32


def main() -> None:
    from gslrm.view.viewer import Viewer, ViewerConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", help="a gslrm checkpoint (its first validation sample is shown)")
    parser.add_argument("--data-root", help="data.root for --ckpt (default: the generated rodent data)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--count", type=int, default=1_000_000, help="Gaussians of the FaceLift-size case")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--training", action="store_true", help="also the step time with the live viewer off/on")
    parser.add_argument("--page-timeout", type=float, default=600.0, help="seconds to wait for a page to draw")
    parser.add_argument("--skip-count-cases", action="store_true", help="only the checkpoint (and --training)")
    args = parser.parse_args()
    rows, profile = [], Path(tempfile.mkdtemp(prefix="gslrm-view-bench-"))
    if args.ckpt:
        from gslrm.schemas import compose
        from gslrm.view.__main__ import build_viewer

        overrides = [
            f"ckpt_path={args.ckpt}",
            "port=0",
            "viewer.show_cameras=false",
            f"data.image_size={args.image_size}",
        ]
        if args.data_root:
            overrides.append(f"data.root={args.data_root}")
        cfg = compose("view", overrides)
        rows.append(_row("checkpoint", lambda: build_viewer(cfg), profile, args.page_timeout))
    scene = facelift_size_scene(args.count)
    for max_splats in () if args.skip_count_cases else (300_000, args.count):

        def make(max_splats=max_splats):
            viewer = Viewer(ViewerConfig(port=0, max_splats=max_splats, min_opacity=0.0, show_cameras=False)).start()
            viewer.show(scene)
            return viewer

        rows.append(_row(f"{args.count:,} Gaussians, max_splats={max_splats:,}", make, profile, args.page_timeout))
    overhead = training_overhead() if args.training else None
    if args.json:
        Path(args.json).write_text(json.dumps({"viewer": rows, "training_overhead": overhead}, indent=2))


if __name__ == "__main__":
    main()
