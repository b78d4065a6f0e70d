"""Where a checkpoint's foreground error is: in the band along the animal's silhouette or inside it. Foreground
PSNR (eval.py's ``psnr_masked``) is measured over the target's alpha > 0.5 pixels; at 64 px a rodent has about as
many of those within 2 pixels of its silhouette as inside, and an edge drawn a pixel off costs there what a dark
coat against the white background costs: nearly the whole range. This splits the squared error of the novel views
between the band and the interior, so a foreground figure reads as geometry (edges) or colour (interior).

    python -m gslrm.bench.edges CKPT [--data-root DIR] [--samples 8] [--band 2]

DIR defaults to the default run's data (``conf/data/rodent.yaml``). Needs no GPU.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gslrm.data.dataset import ViewDataset
from gslrm.losses.metrics import psnr_from_mse
from gslrm.model.gslrm import GSLRM
from gslrm.predict import predict_gaussians
from gslrm.render import RenderConfig, render

__all__ = ["EdgeSplit", "edge_band", "split_error", "score", "main"]


@dataclass
class EdgeSplit:
    """Novel views' foreground squared error, pooled over the samples' pixels."""

    edge_pixels: int
    interior_pixels: int
    edge_share: float  # of the foreground's summed squared error
    psnr_foreground: float  # pooled over every foreground pixel (eval.py averages per image instead)
    psnr_edge: float
    psnr_interior: float


def edge_band(mask: Tensor, band: int) -> Tensor:
    """Foreground pixels of ``mask [n, h, w]`` (bool) within ``band`` pixels (Chebyshev) of a background pixel; the
    image border counts as background."""
    background = F.pad((~mask).float()[:, None], (band,) * 4, value=1.0)
    near_background = F.max_pool2d(background, 2 * band + 1, stride=1)[:, 0] > 0
    return mask & near_background


def split_error(rgb: Tensor, target: Tensor, alpha: Tensor, band: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Summed squared error (mean over RGB) and pixel counts of the edge band and the interior of ``alpha > 0.5``;
    images [n, 3, h, w], alpha [n, h, w]."""
    mask = alpha > 0.5
    edge = edge_band(mask, band)
    interior = mask & ~edge
    squared = ((rgb.clamp(0, 1) - target.clamp(0, 1)) ** 2).mean(dim=1)
    return squared[edge].sum(), edge.sum(), squared[interior].sum(), interior.sum()


@torch.no_grad()
def score(model: GSLRM, dataset: ViewDataset, render_config: RenderConfig, samples: int, band: int = 2) -> EdgeSplit:
    num_inputs = dataset.config.num_input_views
    totals = torch.zeros(4, dtype=torch.float64)
    for index in range(min(samples, len(dataset))):
        batch = {k: v[None] if isinstance(v, Tensor) else v for k, v in dataset[index].items()}
        image, size = batch["image"], batch["image"].shape[-1]
        output = predict_gaussians(model, batch, num_inputs)
        rendered = render(output.gaussians, batch["c2w"], batch["fxfycxcy"], size, size, settings=render_config)
        novel = slice(num_inputs, None)
        parts = split_error(rendered.rgb[0, novel], image[0, novel, :3], image[0, novel, 3], band)
        totals += torch.tensor([float(p) for p in parts], dtype=torch.float64)
    edge_se, edge_n, interior_se, interior_n = totals.tolist()
    psnr = lambda se, n: float(psnr_from_mse(torch.tensor(se / max(n, 1.0))))  # noqa: E731
    return EdgeSplit(
        edge_pixels=int(edge_n),
        interior_pixels=int(interior_n),
        edge_share=edge_se / max(edge_se + interior_se, 1e-12),
        psnr_foreground=psnr(edge_se + interior_se, edge_n + interior_n),
        psnr_edge=psnr(edge_se, edge_n),
        psnr_interior=psnr(interior_se, interior_n),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data-root", default=None, help="a rodent dataset (default: the default run's)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--band", type=int, default=2, help="pixels from the silhouette that count as its edge")
    args = parser.parse_args(argv)
    from gslrm.inference import load_with_dataset
    from gslrm.runs import one_line_errors

    overrides = ["data.generate=false"] + ([f"data.root={args.data_root}"] if args.data_root else [])
    with one_line_errors(ValueError):  # a wrong --data-root or checkpoint: one line, as the entry points
        model, render_config, dataset = load_with_dataset(args.checkpoint, overrides, args.split)
        split = score(model, dataset, render_config, args.samples, args.band)
    print(f"novel views of {args.samples} samples, foreground = target alpha > 0.5, edge = within {args.band} px")
    print(f"  foreground pixels: {split.edge_pixels} edge, {split.interior_pixels} interior")
    print(f"  share of the foreground's squared error in the edge band: {split.edge_share:.2f}")
    print(
        f"  PSNR (pooled): foreground {split.psnr_foreground:.2f}, edge {split.psnr_edge:.2f}, "
        f"interior {split.psnr_interior:.2f}"
    )


if __name__ == "__main__":
    main()
