"""LPIPS (the ``lpips`` package, VGG backbone) as a loss term: inputs scaled to [-1, 1], frozen, never saved."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from torch import Tensor

from gslrm.losses.base import LossInputs, Term, TermConfig, flat_images
from gslrm.weights import load_state_dict

__all__ = ["LPIPSConfig", "LPIPSLoss", "build_lpips"]

VGG16_FILE = "vgg16-397923af.pth"


@dataclass
class LPIPSConfig(TermConfig):
    pretrained_backbone: bool = True  # false = random VGG16 (pnet_rand): tests only
    weights_path: str | None = None  # torchvision vgg16 state dict; default: the torch hub cache


def build_lpips(
    pretrained_backbone: bool = True, weights_path: str | None = None, config_key: str = "loss.lpips.weights_path"
):
    """lpips.LPIPS(net="vgg"): its linear heads ship with the package; the VGG16 backbone comes from the hub cache
    or ``weights_path`` and is never downloaded (a missing file raises MissingWeightsError)."""
    import lpips

    state = None
    if pretrained_backbone:
        state = load_state_dict(weights_path, "vgg16", config_key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False)
    if state is not None:
        for slice_module in (model.net.slice1, model.net.slice2, model.net.slice3, model.net.slice4, model.net.slice5):
            for name, layer in slice_module.named_children():
                if hasattr(layer, "weight"):
                    layer.weight.data.copy_(state[f"features.{name}.weight"])
                    layer.bias.data.copy_(state[f"features.{name}.bias"])
    return model.requires_grad_(False).eval()


class LPIPSLoss(Term):
    name = "lpips"

    def __init__(self, config: LPIPSConfig) -> None:
        super().__init__(config)
        self.net = build_lpips(config.pretrained_backbone, config.weights_path)
        self.train(False)

    def train(self, mode: bool = True) -> LPIPSLoss:
        return super().train(False)

    def forward(self, inputs: LossInputs) -> Tensor:
        render, target = flat_images(inputs.render), flat_images(inputs.target)
        return self.net(render * 2.0 - 1.0, target * 2.0 - 1.0).mean()
