"""A batch's depth prior (disparity) and confidence maps: data for the depth-aware loss terms.

They are attached to a training batch by the data module once it is on the training device
(``ViewDataModule.on_after_batch_transfer``), as ``batch["depth_prior"]`` and ``batch["confidence"]``, the keys the
dataset uses for maps stored beside the images; the loss terms only read them. Refinement attaches them to its sample
the same way."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import torch
from jaxtyping import Float
from torch import Tensor, nn

from gslrm.depth.confidence import ConfidenceCache, gradient_confidence, variance_confidence
from gslrm.depth.estimators import DepthEstimator, MidasConfig, MidasEstimator, disparity_from_depth

__all__ = ["ConfidenceConfig", "DepthPriors", "check_data_loads_priors"]


class ConfidenceSource(StrEnum):
    none = "none"
    precomputed = "precomputed"  # data.confidence_maps
    runtime = "runtime"  # computed here, by ``method``


class ConfidenceMethod(StrEnum):
    variance = "variance"  # MiDaS's disagreement with itself under flip, grayscale and noise
    simple = "simple"  # the depth prior's gradients


@dataclass
class ConfidenceConfig:
    source: ConfidenceSource = ConfidenceSource.none
    method: ConfidenceMethod = ConfidenceMethod.variance  # with source=runtime
    num_augmentations: int = 4  # 2..4: original, flip, grayscale, noise
    noise_std: float = 0.01
    cache_size: int = 10000  # maps kept in memory
    cache_dir: str | None = None  # also keep them on disk (shared by ranks and later runs)


class DepthPriors(nn.Module):
    """Depth priors from ``estimator`` and confidence maps from ``confidence``, cached per image name. MiDaS is
    loaded at construction (so a missing model fails at start-up) when the estimator or the runtime variance method
    needs it, unless ``midas_estimator`` hands over one already loaded (the pseudo-view term's: one copy in memory)."""

    def __init__(
        self,
        estimator: str,
        midas: MidasConfig,
        confidence: ConfidenceConfig,
        midas_estimator: nn.Module | None = None,
        depth_prior: bool = True,
    ) -> None:
        super().__init__()
        if estimator not in set(DepthEstimator):
            raise ValueError(f"loss.depth.estimator: expected one of {', '.join(DepthEstimator)}, got {estimator!r}")
        self.estimator, self.confidence_config = estimator, confidence
        self.attaches_depth_prior = depth_prior  # attach() adds depth_prior (the depth term reads it)
        runtime_variance = confidence.source == "runtime" and confidence.method == "variance"
        needs_midas = estimator == "midas" or runtime_variance
        self.midas = (midas_estimator or MidasEstimator(midas)) if needs_midas else None
        self.confidence_cache = ConfidenceCache(confidence.cache_size, confidence.cache_dir)
        self.disparity_cache = ConfidenceCache(confidence.cache_size)  # MiDaS's prior of a photo never changes

    @classmethod
    def for_loss(cls, loss, midas_estimator: nn.Module | None = None) -> DepthPriors | None:
        """The priors ``loss`` (a LossConfig) reads, or None when no active term reads any: the depth term
        reads ``depth_prior``, the image term ``confidence`` when its confidence has a source."""
        uses_confidence = loss.image.weight > 0 and loss.confidence.source != "none"
        if loss.depth.weight <= 0 and not uses_confidence:
            return None
        return cls(loss.depth.estimator, loss.midas, loss.confidence, midas_estimator, loss.depth.weight > 0)

    def attach(self, batch: dict) -> dict:
        """``batch`` with ``depth_prior`` and ``confidence`` (as configured) computed on its device; a shallow copy,
        the caller's batch is left as it was."""
        self.to(batch["image"].device)
        out = dict(batch)
        if self.attaches_depth_prior:
            out["depth_prior"] = self.disparity(batch)
        confidence = self.confidence(batch, out.get("depth_prior"))
        if confidence is not None:
            out["confidence"] = confidence
        return out

    def disparity(self, batch: dict) -> Float[Tensor, "b v 1 h w"]:
        """The depth prior of every view of the batch, as disparity."""
        if self.estimator == "ground_truth":
            if "depth" not in batch:
                raise KeyError(
                    "loss.depth.estimator=ground_truth needs the rendered depth maps: set data.load_depth=true"
                )
            return disparity_from_depth(batch["depth"])
        if self.estimator == "precomputed":
            if "depth_prior" not in batch:
                raise KeyError("loss.depth.estimator=precomputed needs data.depth_maps.dir (the maps' directory)")
            return batch["depth_prior"]
        images = batch["image"][:, :, :3].flatten(0, 1)
        return self._per_image(batch, self.disparity_cache, lambda i: self.midas(images[i].float()))

    def confidence(self, batch: dict, disparity: Tensor | None) -> Float[Tensor, "b v 1 h w"] | None:
        config = self.confidence_config
        if config.source == "none":
            return None
        if config.source == "precomputed":
            if "confidence" not in batch:
                raise KeyError(
                    "loss.confidence.source=precomputed needs data.confidence_maps.dir (the maps' directory)"
                )
            return batch["confidence"]
        if config.method == "simple":

            def from_prior(i: list[int]) -> Tensor:  # the prior is only needed for images not cached yet
                prior = self.disparity(batch) if disparity is None else disparity
                return gradient_confidence(prior.flatten(0, 1)[i])[:, None]

            return self._per_image(batch, self.confidence_cache, from_prior)

        def estimate(i: list[int]) -> Tensor:
            images = batch["image"][:, :, :3].flatten(0, 1)[i].float()
            return variance_confidence(images, self.midas, config.num_augmentations, config.noise_std)[:, None]

        return self._per_image(batch, self.confidence_cache, estimate)

    @torch.no_grad()
    def _per_image(self, batch: dict, cache: ConfidenceCache, compute: Callable[[list[int]], Tensor]) -> Tensor:
        """One map per view of the batch, cached by image name: ``compute(indices)`` runs once, for the flattened
        (sample, view) indices whose images are not in the cache yet."""
        b, v, _, h, w = batch["image"].shape
        names = batch.get("names")
        if names is None:
            raise KeyError("the batch has no image names (batch['names']): per-image caching needs them")
        flat_names = [name for sample in names for name in sample]
        maps = [cache.get(name) for name in flat_names]
        missing = [i for i, value in enumerate(maps) if value is None]
        if missing:
            for i, value in zip(missing, compute(missing), strict=True):
                cache.put(flat_names[i], value)
                cache.misses += 1
                maps[i] = value.detach().float().cpu()
        image = batch["image"]
        return torch.stack(maps).to(image.device, image.dtype).view(b, v, 1, h, w)


def check_data_loads_priors(loss, data) -> None:
    """At start-up, one line when the loss config needs maps that the data config does not load (instead of a
    traceback from inside the first training step). ``loss``: LossConfig, ``data``: DataConfig."""
    from gslrm.data.format import DataFormatError

    confidence = loss.confidence
    uses_confidence = loss.image.weight > 0 and confidence.source != "none"
    uses_prior = loss.depth.weight > 0 or (
        uses_confidence and confidence.source == "runtime" and confidence.method == "simple"
    )
    if uses_prior and loss.depth.estimator == "ground_truth" and not data.load_depth:
        raise DataFormatError(
            "loss.depth.estimator=ground_truth: set data.load_depth=true (the depth maps are the prior)"
        )
    for name in ("metric_depth", "pixel_depth"):
        if getattr(loss, name).weight > 0 and not data.load_depth:
            raise DataFormatError(f"loss.{name}: set data.load_depth=true (the term compares with the data's depth)")
    if uses_prior and loss.depth.estimator == "precomputed" and data.depth_maps is None:
        raise DataFormatError("loss.depth.estimator=precomputed: set data.depth_maps.dir (the precomputed depth maps)")
    if uses_confidence and confidence.source == "precomputed" and data.confidence_maps is None:
        raise DataFormatError("loss.confidence.source=precomputed: set data.confidence_maps.dir (the confidence maps)")
