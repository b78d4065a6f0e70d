"""FaceLift's VGG19 perceptual loss (Chen & Koltun style), frozen and never saved in checkpoints.

features relu1_2, relu2_2, relu3_2, relu4_2, relu5_2 of a VGG19 whose max-pools are average pools;
inputs x*255 - [123.68, 116.779, 103.939] (RGB order; FaceLift's comment says BGR but it never flips);
loss = (1.0 L1(inputs) + L1(f1)/2.6 + L1(f2)/4.8 + L1(f3)/3.7 + L1(f4)/5.6 + 10 L1(f5)/1.5) / 255, L1 = mean |a - b|.

Weights (``weights``): ``torchvision``, its VGG19 ImageNet state dict (``vgg19-dcbb9e9d.pth``) from ``weights_path`` or
the torch hub cache; ``mat``, FaceLift's MatConvNet ``imagenet-vgg-verydeep-19.mat`` from ``VGG19_WEIGHTS_PATH`` or
FaceLift's cache ``~/.cache/openfacelift``. A cached file missing is downloaded on first use (``gslrm.weights``). The
torchvision network expects (x - mean)/std: that normalization is folded into conv1 so both weight files see
FaceLift's x*255 - mean input (equal up to conv1's zero padding at the border).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gslrm.losses.base import LossInputs, Term, TermConfig, flat_images
from gslrm.weights import load_state_dict, weights_path

__all__ = ["PerceptualConfig", "PerceptualLoss", "VGG19Features"]

IMAGENET_MEAN_255 = (123.68, 116.779, 103.939)
TORCHVISION_MEAN, TORCHVISION_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LAYER_WEIGHTS = (1.0, 1 / 2.6, 1 / 4.8, 1 / 3.7, 1 / 5.6, 10 / 1.5)
CHANNELS = (64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512)
TORCHVISION_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
MAT_INDICES = TORCHVISION_INDICES  # FaceLift reads the same positions from the .mat layer list
VGG19_FILE = "vgg19-dcbb9e9d.pth"


class VGG19Features(nn.Module):
    """conv1..conv16 (FaceLift's key names); forward returns relu1_2, relu2_2, relu3_2, relu4_2, relu5_2."""

    def __init__(self) -> None:
        super().__init__()
        previous = 3
        for index, channels in enumerate(CHANNELS, start=1):
            self.add_module(f"conv{index}", nn.Conv2d(previous, channels, 3, padding=1))
            previous = channels

    def forward(self, x: Tensor) -> list[Tensor]:
        conv = lambda i, t: F.relu(getattr(self, f"conv{i}")(t))  # noqa: E731
        pool = lambda t: F.avg_pool2d(t, 2)  # noqa: E731
        relu1_2 = conv(2, conv(1, x))
        relu2_2 = conv(4, conv(3, pool(relu1_2)))
        relu3_2 = conv(6, conv(5, pool(relu2_2)))
        relu4_2 = conv(10, conv(9, pool(conv(8, conv(7, relu3_2)))))
        relu5_2 = conv(14, conv(13, pool(conv(12, conv(11, relu4_2)))))
        return [relu1_2, relu2_2, relu3_2, relu4_2, relu5_2]

    def load_torchvision(self, state: dict) -> None:
        mapped = {}
        for number, index in enumerate(TORCHVISION_INDICES, start=1):
            mapped[f"conv{number}.weight"] = state[f"features.{index}.weight"]
            mapped[f"conv{number}.bias"] = state[f"features.{index}.bias"]
        # fold (x - mean)/std into conv1 so the input can be FaceLift's x*255 - mean_255
        std = torch.tensor(TORCHVISION_STD).view(1, 3, 1, 1)
        shift = (torch.tensor(IMAGENET_MEAN_255) / 255.0 - torch.tensor(TORCHVISION_MEAN)).view(1, 3, 1, 1)
        weight = mapped["conv1.weight"]
        mapped["conv1.bias"] = mapped["conv1.bias"] + (weight * shift / std).sum(dim=(1, 2, 3))
        mapped["conv1.weight"] = weight / (255.0 * std)
        self.load_state_dict(mapped)

    def load_mat(self, path: Path) -> None:
        """FaceLift's MatConvNet file: layers[i].weights = {kernel [h, w, in, out], bias}, kernel permuted (3,2,0,1)."""
        from scipy.io import loadmat

        layers = loadmat(str(path))["layers"][0]
        state = {}
        for number, index in enumerate(MAT_INDICES, start=1):
            kernel, bias = layers[index][0][0]["weights"][0]
            state[f"conv{number}.weight"] = torch.from_numpy(kernel).permute(3, 2, 0, 1).float().contiguous()
            state[f"conv{number}.bias"] = torch.from_numpy(bias).reshape(-1).float()
        self.load_state_dict(state)


class VggWeights(StrEnum):
    torchvision = "torchvision"  # torchvision's VGG19 state dict
    mat = "mat"  # FaceLift's MatConvNet file (path from VGG19_WEIGHTS_PATH or its cache)


@dataclass
class PerceptualConfig(TermConfig):
    pretrained: bool = True  # false = random weights: for tests only, the loss is then meaningless
    weights_path: str | None = None  # torchvision vgg19 state dict; default: the torch hub cache
    weights: VggWeights = VggWeights.torchvision


class PerceptualLoss(Term):
    name = "perceptual"

    def __init__(self, config: PerceptualConfig) -> None:
        super().__init__(config)
        self.net = VGG19Features()
        if config.pretrained:
            mat = os.environ.get("VGG19_WEIGHTS_PATH")
            if config.weights == "mat" or mat:  # FaceLift's file: its environment variable, else its cache
                self.net.load_mat(weights_path(mat, "vgg19_mat", "VGG19_WEIGHTS_PATH"))
            else:
                key = "loss.perceptual.weights_path"
                self.net.load_torchvision(load_state_dict(config.weights_path, "vgg19", key))
        self.net.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN_255).view(1, 3, 1, 1), persistent=False)
        self.train(False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        return super().train(False)  # always eval, as FaceLift

    def forward(self, inputs: LossInputs) -> Tensor:
        x = flat_images(inputs.render) * 255.0 - self.mean
        y = flat_images(inputs.target) * 255.0 - self.mean
        loss = LAYER_WEIGHTS[0] * F.l1_loss(x, y)
        for weight, fx, fy in zip(LAYER_WEIGHTS[1:], self.net(x), self.net(y), strict=True):
            loss = loss + weight * F.l1_loss(fx, fy)
        return loss / 255.0


def vgg19_weights_available(weights_path: str | None = None) -> bool:
    """Whether PerceptualLoss(pretrained=True) can get its weights here: present, or fetched now if the network
    allows (``make train`` falls back to ``loss=l2`` when not)."""
    from gslrm.weights import MissingWeightsError
    from gslrm.weights import weights_path as resolve

    mat = os.environ.get("VGG19_WEIGHTS_PATH")
    try:
        resolve(mat or weights_path, "vgg19_mat" if mat else "vgg19", "loss.perceptual.weights_path")
    except MissingWeightsError:
        return False
    return True
