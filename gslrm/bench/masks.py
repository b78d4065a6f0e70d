"""How a checkpoint's novel views move when its input views' masks are a few pixels off:

    python -m gslrm.bench.masks CKPT --data-root DIR [--pixels 0 1 -1 2] [--samples 8]

For each offset, every input view's alpha is grown (> 0) or shrunk (< 0) by that many pixels (``grow_masks``) before
the model sees it; the targets keep their true masks. The figures are eval.py's, on the novel views, averaged over
the samples: opacity IoU, foreground PSNR and the thin parts drawn. Only a model that reads its inputs' masks
(``model.hull_depth``) can move; one that does not scores the same at every offset. A rig's masks are not exact,
and this says what a pixel of error costs (docs/training.md#the-visual-hull-as-the-depth-to-start-from).
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import Tensor

from gslrm.data.dataset import ViewDataset
from gslrm.losses.metrics import opacity_iou, per_image_masked_psnr, thin_recall
from gslrm.model.gslrm import GSLRM
from gslrm.model.hull import grow_masks
from gslrm.predict import predict_and_render
from gslrm.render import RenderConfig

__all__ = ["score", "main"]


@torch.no_grad()
def score(
    model: GSLRM, dataset: ViewDataset, render_config: RenderConfig, pixels: int, samples: int
) -> dict[str, float]:
    """Novel-view ``opacity_iou``, ``psnr_masked`` and ``thin_recall`` with the inputs' masks ``pixels`` off."""
    inputs = dataset.config.num_input_views
    totals: dict[str, list[float]] = {"opacity_iou": [], "psnr_masked": [], "thin_recall": []}
    for index in range(min(samples, len(dataset))):
        batch = {k: v[None] if isinstance(v, Tensor) else v for k, v in dataset[index].items()}
        image = batch["image"].clone()
        image[0, :inputs, 3] = grow_masks(image[0, :inputs, 3], pixels)
        _, rendered = predict_and_render(model, {**batch, "image": image}, inputs, render_config)
        truth = batch["image"][0, inputs:]
        alpha = rendered.alpha[0, inputs:]
        totals["opacity_iou"].append(float(opacity_iou(alpha, truth[:, 3:4])))
        totals["psnr_masked"].append(
            float(per_image_masked_psnr(rendered.rgb[0, inputs:], truth[:, :3], truth[:, 3:4]).nanmean())
        )
        totals["thin_recall"].append(float(thin_recall(alpha, truth[:, 3:4])))
    # a sample without thin parts has no thin_recall (NaN): averaged over those that have, as eval.py does
    return {name: mean([v for v in values if not math.isnan(v)]) for name, values in totals.items()}


def mean(values: list[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument(
        "--data-root", required=True, help="a dataset with masks (alpha), e.g. the generated rodent data"
    )
    parser.add_argument("--split", default="val")
    parser.add_argument("--pixels", type=int, nargs="+", default=[0, 1, -1, 2])
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args(argv)
    from gslrm.inference import load_with_dataset
    from gslrm.runs import one_line_errors

    with one_line_errors(ValueError):
        model, render_config, dataset = load_with_dataset(
            args.checkpoint, [f"data.root={args.data_root}", "data.generate=false"], args.split
        )
        rows = [(pixels, score(model, dataset, render_config, pixels, args.samples)) for pixels in args.pixels]
    print(f"{'input masks':12} {'IoU':>6} {'fg PSNR':>8} {'thin':>6}  (novel views, {args.samples} samples)")
    for pixels, figures in rows:
        label = "exact" if pixels == 0 else f"{pixels:+d} px"
        print(f"{label:12} {figures['opacity_iou']:6.3f} {figures['psnr_masked']:8.2f} {figures['thin_recall']:6.3f}")


if __name__ == "__main__":
    main()
