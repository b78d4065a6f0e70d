"""How far a checkpoint's opacity IoU is from what exact depth would give: its Gaussians scored as they are, with
every foreground pixel's Gaussian moved onto the true surface along its ray, and the true surface alone splatted
(pixel-sized, opaque or with the input's alpha). Issue 31 asks for novel-view opacity IoU 0.65 at 64 px; this says
how much of the gap is depth and how much is what pixel-aligned splats from the input views can draw at that size.
Its thin column is the share of the novel views' thin parts (the tail, the feet: ``thin_parts``) that each
variant draws. It also says how much of each input view's silhouette that view's own Gaussians draw, and how much all
of them do (``input_view_coverage``: the tail's story, docs/training.md#the-tail-and-own-view-coverage), and how far
the input pixels' own Gaussians lie from the true surface and how opaque they are, the thin parts apart from the body,
and how far the visual hull of the input masks puts them, what ``model.hull_depth`` starts from (``input_pixels``:
docs/training.md#thin-parts-a-measure-and-the-depth-they-need, #the-visual-hull-as-the-depth-to-start-from).

    python -m gslrm.bench.ceiling CKPT --data-root DIR [--samples 8]

DIR is a generated rodent dataset (it has per-view z-depth), read with the default run's data settings
(``conf/data/rodent.yaml``). Needs no GPU (the CPU rasterizer, gsplat's semantics).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import Tensor

from gslrm.data.dataset import ViewDataset
from gslrm.losses.metrics import opacity_iou, thin_parts
from gslrm.model.gaussians import Gaussians
from gslrm.model.gslrm import GSLRM, ModelOutput, pixels_from_gaussian_order, pixels_in_gaussian_order
from gslrm.predict import predict_gaussians
from gslrm.render import RenderConfig, render

__all__ = [
    "VARIANTS",
    "Scores",
    "variants",
    "score",
    "Coverage",
    "input_view_coverage",
    "PixelFacts",
    "input_pixels",
    "main",
]

# the splats of the true surface: isotropic, this fraction of a pixel's footprint at their depth (smaller leaves
# holes in closer views, larger grows the silhouette: on the default's val samples 0.2 and 0.3 scored within 0.01
# of each other, 0.5-1.5 lower)
FOOTPRINT = 0.3
VARIANTS = {
    "model": "the checkpoint's Gaussians",
    "model_true_depth": "the same, each foreground pixel's Gaussian moved to the true surface on its ray",
    "surface_opaque": "the true surface only: one opaque pixel-sized splat per foreground input pixel",
    "surface_alpha": "the same with the input pixel's alpha as opacity (soft edges)",
}


@dataclass
class Scores:
    iou_novel: float  # eval.py's opacity_iou_novel: over each sample's novel views, averaged over the samples
    iou_input: float
    precision_novel: float  # pooled over the samples' novel pixels
    recall_novel: float
    thin_recall_novel: float  # pooled over the samples' novel views' thin parts (metrics.thin_parts)


def variants(output: ModelOutput, batch: dict, num_inputs: int, patch_size: int) -> dict[str, Gaussians]:
    """``VARIANTS``' Gaussians of one sample (batch dim 1) from the model's ``output`` and the batch's depth."""
    gaussians = output.gaussians
    tokens = gaussians.means.shape[1] - output.pixel_means[0].numel() // 3
    flat = lambda t: pixels_in_gaussian_order(t, patch_size)  # noqa: E731
    c2w, fxfycxcy = batch["c2w"][:, :num_inputs], batch["fxfycxcy"][:, :num_inputs]
    z = batch["depth"][:, :num_inputs]
    forward = c2w[:, :, :3, 2][..., None, None]
    distance = z / (output.ray_d * forward).sum(dim=2, keepdim=True)  # z-depth -> distance along the unit ray
    surface = output.ray_o + distance * output.ray_d
    pad = lambda t: torch.cat([t.new_zeros(t.shape[0], tokens, *t.shape[2:]), t], dim=1)  # noqa: E731
    foreground = pad(flat((z > 0).float()))[..., 0] > 0.5
    means = torch.where(foreground[..., None], pad(flat(surface)), gaussians.means)
    footprint = pad(flat(distance / fxfycxcy[..., 0, None, None, None] * FOOTPRINT)).expand(-1, -1, 3)
    opaque = foreground.float()
    alpha = pad(flat(batch["image"][:, :num_inputs, 3:4]))[..., 0] * opaque
    surface_splats = lambda opacity: Gaussians(means, gaussians.features, footprint, gaussians.quats, opacity)  # noqa: E731
    return {
        "model": gaussians,
        "model_true_depth": Gaussians(
            means, gaussians.features, gaussians.scales, gaussians.quats, gaussians.opacities
        ),
        "surface_opaque": surface_splats(opaque),
        "surface_alpha": surface_splats(alpha),
    }


def silhouette_counts(alpha: Tensor, truth: Tensor) -> Tensor:
    """[true positives, false positives, false negatives] of the drawn silhouette (alpha > 0.5) against the mask."""
    drawn, animal = alpha > 0.5, truth > 0.5
    return torch.stack([(drawn & animal).sum(), (drawn & ~animal).sum(), (~drawn & animal).sum()]).float()


def precision_recall(counts: Tensor) -> tuple[float, float]:
    """Pooled precision and recall of ``silhouette_counts`` summed over pixels of many views."""
    true, false_drawn, missed = counts
    return float(true / (true + false_drawn).clamp_min(1)), float(true / (true + missed).clamp_min(1))


@torch.no_grad()
def score(model: GSLRM, dataset: ViewDataset, render_config: RenderConfig, samples: int) -> dict[str, Scores]:
    num_inputs = dataset.config.num_input_views
    ious = defaultdict(lambda: {"novel": [], "input": []})
    counts = defaultdict(lambda: torch.zeros(3))  # true positives, false positives, false negatives (novel)
    thin_counts = defaultdict(lambda: torch.zeros(2))  # thin pixels drawn, thin pixels (novel)
    for index in range(min(samples, len(dataset))):
        batch = {k: v[None] if isinstance(v, Tensor) else v for k, v in dataset[index].items()}
        if "depth" not in batch:
            raise ValueError("the dataset has no depth (data.load_depth): the true surface needs it")
        image, size = batch["image"], batch["image"].shape[-1]
        output = predict_gaussians(model, batch, num_inputs)
        truth = image[0, :, 3]
        thin = thin_parts(truth[num_inputs:, None])[:, 0]
        for name, gaussians in variants(output, batch, num_inputs, model.config.patch_size).items():
            alpha = render(gaussians, batch["c2w"], batch["fxfycxcy"], size, size, settings=render_config).alpha
            alpha = alpha[0, :, 0]
            ious[name]["input"].append(opacity_iou(alpha[:num_inputs], truth[:num_inputs]))
            ious[name]["novel"].append(opacity_iou(alpha[num_inputs:], truth[num_inputs:]))
            counts[name] += silhouette_counts(alpha[num_inputs:], truth[num_inputs:])
            thin_counts[name] += torch.stack([((alpha[num_inputs:] > 0.5) & thin).sum(), thin.sum()]).float()
    mean = lambda values: float(torch.stack(values).mean())  # noqa: E731
    return {
        name: Scores(
            mean(ious[name]["novel"]),
            mean(ious[name]["input"]),
            *precision_recall(counts[name]),
            float(thin_counts[name][0] / thin_counts[name][1].clamp_min(1)),
        )
        for name in VARIANTS
    }


@dataclass
class Coverage:
    """The input views' silhouettes (alpha > 0.5 against the mask), pooled over the samples' input pixels."""

    iou: float
    precision: float
    recall: float


@torch.no_grad()
def input_view_coverage(
    model: GSLRM, dataset: ViewDataset, render_config: RenderConfig, samples: int
) -> dict[str, Coverage]:
    """How much of each input view's silhouette its own pixel Gaussians draw alone (``own``, what
    ``loss.own_view`` supervises) and all the Gaussians draw (``all``, what the image terms see): where ``own`` falls
    short of ``all``, the other views' Gaussians fill the view in."""
    from gslrm.losses.own_view import own_view_gaussians

    num_inputs = dataset.config.num_input_views
    counts = defaultdict(lambda: torch.zeros(3))  # silhouette_counts, pooled
    for index in range(min(samples, len(dataset))):
        batch = {k: v[None] if isinstance(v, Tensor) else v for k, v in dataset[index].items()}
        image, c2w, fxfycxcy = batch["image"], batch["c2w"][:, :num_inputs], batch["fxfycxcy"][:, :num_inputs]
        size = image.shape[-1]
        output = predict_gaussians(model, batch, num_inputs)
        own = own_view_gaussians(output.gaussians, num_inputs, size * size)
        alphas = {
            "own": render(
                own, c2w.reshape(-1, 1, 4, 4), fxfycxcy.reshape(-1, 1, 4), size, size, settings=render_config
            ).alpha.reshape(num_inputs, size, size),
            "all": render(output.gaussians, c2w, fxfycxcy, size, size, settings=render_config).alpha[0, :, 0],
        }
        for name, alpha in alphas.items():
            counts[name] += silhouette_counts(alpha, image[0, :num_inputs, 3])
    return {name: Coverage(float(c[0] / c.sum().clamp_min(1)), *precision_recall(c)) for name, c in counts.items()}


@dataclass
class PixelFacts:
    """The input views' foreground pixels' own Gaussians, pooled over the samples."""

    pixels: int
    depth_error_median: float  # |z - z_true| / z_true of the pixel's Gaussian's z-depth in its own camera
    depth_error_mean: float
    opacity_median: float
    opaque_share: float  # opacity > 0.5
    # where the pixel's ray enters the visual hull of the input masks (gslrm.model.hull, what model.hull_depth starts
    # from, whatever the checkpoint's setting): its z-depth error as above, over the pixels that have an entry
    hull_error_median: float
    hull_share: float  # the pixels with an entry


@torch.no_grad()
def input_pixels(model: GSLRM, dataset: ViewDataset, samples: int, patch_size: int) -> dict[str, PixelFacts]:
    """``thin`` (the masks' thin parts, ``thin_parts``) and ``body`` (the other foreground pixels) of the input views:
    how far their own Gaussians lie from the true surface along their rays and how opaque they are. A thin part
    drawn in a novel view needs both: its Gaussians within its width of the surface, and opaque enough."""
    from gslrm.losses.pixel_depth import pixel_z_depth
    from gslrm.model.hull import hull_entry

    num_inputs = dataset.config.num_input_views
    errors, opacities, hull_errors = defaultdict(list), defaultdict(list), defaultdict(list)
    for index in range(min(samples, len(dataset))):
        batch = {k: v[None] if isinstance(v, Tensor) else v for k, v in dataset[index].items()}
        if "depth" not in batch:
            raise ValueError("the dataset has no depth (data.load_depth): the true surface needs it")
        image, c2w = batch["image"][:, :num_inputs], batch["c2w"][:, :num_inputs]
        output = predict_gaussians(model, batch, num_inputs)
        depth = pixel_z_depth(output.pixel_means, output.ray_o, c2w)[0, :, 0]
        truth = batch["depth"][0, :num_inputs, 0]
        # the pixel Gaussians follow the tokens'; in image layout as pixel_means
        opacity = output.gaussians.opacities[:, -depth.numel() :, None]
        opacity = pixels_from_gaussian_order(opacity, num_inputs, depth.shape[1], patch_size)[0, :, 0]
        thin = thin_parts(image[0, :, 3:4])[:, 0] & (truth > 0)
        body = (image[0, :, 3] > 0.5) & ~thin & (truth > 0)
        error = (depth - truth).abs() / truth.clamp_min(1e-6)
        fxfycxcy, config = batch["fxfycxcy"][:, :num_inputs], model.config
        entry, found = hull_entry(
            image[:, :, 3], c2w, fxfycxcy, output.ray_o, output.ray_d, config.depth_range, config.hull_samples
        )
        hull_depth = pixel_z_depth(output.ray_o + entry[:, :, None] * output.ray_d, output.ray_o, c2w)[0, :, 0]
        hull_error = torch.where(found[0], (hull_depth - truth).abs() / truth.clamp_min(1e-6), torch.nan)
        for name, where in (("thin", thin), ("body", body)):
            errors[name].append(error[where])
            opacities[name].append(opacity[where])
            hull_errors[name].append(hull_error[where])
    facts = {}
    for name in ("thin", "body"):
        error, opacity, hull_error = torch.cat(errors[name]), torch.cat(opacities[name]), torch.cat(hull_errors[name])
        if error.numel() == 0:
            facts[name] = PixelFacts(0, *[float("nan")] * 6)
            continue
        facts[name] = PixelFacts(
            error.numel(),
            float(error.median()),
            float(error.mean()),
            float(opacity.median()),
            float((opacity > 0.5).float().mean()),
            float(hull_error.nanmedian()),
            float((~hull_error.isnan()).float().mean()),
        )
    return facts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data-root", required=True, help="a generated rodent dataset (with depth)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args(argv)
    from gslrm.inference import load_with_dataset
    from gslrm.runs import one_line_errors

    overrides = [f"data.root={args.data_root}", "data.generate=false", "data.load_depth=true"]
    with one_line_errors(ValueError):  # a wrong --data-root or checkpoint: one line, as the entry points
        model, render_config, dataset = load_with_dataset(args.checkpoint, overrides, args.split)
        results = score(model, dataset, render_config, args.samples)
        coverage = input_view_coverage(model, dataset, render_config, args.samples)
        pixels = input_pixels(model, dataset, args.samples, model.config.patch_size)
    print(
        f"{'variant':18} {'novel IoU':>9} {'input IoU':>9} {'precision':>9} {'recall':>9} {'thin':>6}"
        f"  (novel views, {args.samples} samples)"
    )
    for name, scores in results.items():
        print(
            f"{name:18} {scores.iou_novel:9.3f} {scores.iou_input:9.3f} {scores.precision_novel:9.3f} "
            f"{scores.recall_novel:9.3f} {scores.thin_recall_novel:6.3f}  {VARIANTS[name]}"
        )
    print(
        f"\n{'input views drawn by':18} {'IoU':>9} {'precision':>9} {'recall':>9}  (pooled over the input views' pixels)"
    )
    for name, text in (("own", "their own pixel Gaussians alone"), ("all", "all the Gaussians (as eval.py)")):
        c = coverage[name]
        print(f"{name:18} {c.iou:9.3f} {c.precision:9.3f} {c.recall:9.3f}  {text}")
    print(
        f"\n{'input pixels':18} {'pixels':>9} {'depth err':>9} {'(mean)':>9} {'opacity':>9} {'opaque':>6}"
        f" {'hull err':>8} {'in hull':>7}"
        "  (their own Gaussians: z-depth error relative to the truth, medians; opaque: opacity > 0.5;"
        " hull: the masks' visual hull's entry, model.hull_depth's start, over the pixels with one)"
    )
    for name, text in (("thin", "the masks' thin parts (tail, feet)"), ("body", "the other foreground pixels")):
        f = pixels[name]
        print(
            f"{name:18} {f.pixels:9d} {f.depth_error_median:9.3f} {f.depth_error_mean:9.3f} "
            f"{f.opacity_median:9.3f} {f.opaque_share:6.2f} {f.hull_error_median:8.3f} {f.hull_share:7.2f}  {text}"
        )


if __name__ == "__main__":
    main()
