"""What more input views than a checkpoint learnt with buy and cost: ``python -m gslrm.bench.inputs --ckpt CKPT``.

For each input count, eval.py's Evaluator on the validation split with the model given that many views (the first
k of the rig), scored on the held-out orbit views (never inputs for any k, so every count is scored on the same
views), and the model's forward time per sample on this machine. The model is the same for every count: GS-LRM
takes any number of views (tokens from each view join one sequence), but a checkpoint has only seen its own count.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

__all__ = ["measure"]

ORBIT_METRICS = ("psnr_orbit", "psnr_masked_orbit", "opacity_iou_orbit", "psnr_black_orbit")


def measure(ckpt: str, data_root: str | None, counts: list[int], overrides: list[str]) -> list[dict]:
    import lightning as L
    import torch

    from gslrm.cameras import turntable_cameras
    from gslrm.config import build
    from gslrm.evaluate import Evaluator
    from gslrm.inference import load_for_inference
    from gslrm.schemas import compose

    rows = []
    for count in counts:
        with tempfile.TemporaryDirectory() as scratch:
            root = [f"data.root={data_root}"] if data_root else []
            cfg = compose(
                "eval",
                [f"ckpt_path={ckpt}", *root, f"paths.output_dir={scratch}", "eval.num_visuals=0", "eval.lpips=off"]
                + overrides,
            )
            loaded = load_for_inference(cfg)
            loaded.data_config = replace(loaded.data_config, num_input_views=count, load_orbit=True)
            config = replace(build(cfg.eval), output_dir=scratch, checkpoint=loaded.checkpoint)
            evaluator = Evaluator(loaded.model, config, count, loaded.render_config)
            trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
            trainer.test(evaluator, datamodule=loaded.datamodule(test_split=cfg.split), verbose=False)
            size = loaded.data_config.image_size
            c2w, k = turntable_cameras(count, size)
            # RGBA where the model carves the masks' hull (model.hull_depth): random alpha, half the pixels
            # foreground, several times an animal's tenth of the frame, so the time is an upper bound
            images = torch.rand(1, count, 4 if loaded.model.config.hull_depth else 3, size, size)
            with torch.inference_mode():
                loaded.model(images, c2w[None], k[None])  # warm-up
                started = time.perf_counter()
                for _ in range(5):
                    loaded.model(images, c2w[None], k[None])
            seconds = (time.perf_counter() - started) / 5
        summary = evaluator.summary
        rows.append({"inputs": count, "model_seconds": seconds} | {key: summary[key] for key in ORBIT_METRICS})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m gslrm.bench.inputs", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--data-root", default=None, help="data.root (default: the generated rodent data)")
    parser.add_argument("--counts", default="4,5,6")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="eval.py overrides, e.g. data.generator.samples=24")
    args = parser.parse_args()
    rows = measure(args.ckpt, args.data_root, [int(c) for c in args.counts.split(",")], args.overrides)
    print("| inputs | model s/sample | " + " | ".join(ORBIT_METRICS) + " |")
    print("|---|---|" + "---|" * len(ORBIT_METRICS))
    for row in rows:
        cells = " | ".join(f"{row[key]:.3f}" for key in ORBIT_METRICS)
        print(f"| {row['inputs']} | {row['model_seconds']:.3f} | {cells} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
