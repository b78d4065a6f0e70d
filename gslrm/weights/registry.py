"""Every pretrained network the trainer loads: where it comes from, its published checksum, where it is cached.

The caches are the ecosystem's own, so files fetched by torchvision, lpips, torch.hub or huggingface_hub elsewhere
are found, and copying ``TORCH_HOME`` / ``HF_HOME`` moves them:
- torchvision-format state dicts and MiDaS weights: ``<torch hub dir>/checkpoints/`` (``$TORCH_HOME/hub``,
  default ``~/.cache/torch/hub``); MiDaS's code: ``<torch hub dir>/intel-isl_MiDaS_master``;
- FaceLift's VGG19 MatConvNet file: ``~/.cache/openfacelift`` (FaceLift's cache; ``GSLRM_OPENFACELIFT_CACHE``);
- FaceLift's GS-LRM checkpoint: the huggingface_hub cache (``$HF_HOME/hub``, default ``~/.cache/huggingface/hub``).

Mirrors (and tests) replace any source's URL or checksum with a JSON file named by ``GSLRM_WEIGHTS_SOURCES``:
``{"vgg19": {"url": "http://mirror/vgg19-dcbb9e9d.pth"}, ...}``; huggingface_hub follows ``HF_ENDPOINT``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

__all__ = ["Source", "SOURCES", "source", "destination", "FACELIFT_ALIAS", "HF_PREFIX"]

HF_PREFIX = "hf://"
FACELIFT_ALIAS = "facelift"  # model.init_from=facelift


@dataclass(frozen=True)
class Source:
    name: str
    what: str  # for messages
    filename: str
    url: str  # https://... or hf://owner/repo/path
    checksum: str | None  # "sha256:<prefix>" (torchvision's hash-prefix convention) | "md5:<hex>" | None
    cache: str  # "checkpoints" | "hub_repo" | "openfacelift" | "hf"
    note: str = ""


SOURCES: dict[str, Source] = {
    source.name: source
    for source in (
        Source(
            "vgg19",
            "VGG19 (perceptual loss)",
            "vgg19-dcbb9e9d.pth",
            "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
            "sha256:dcbb9e9d",
            "checkpoints",
        ),
        Source(
            "vgg16",
            "VGG16 (LPIPS backbone)",
            "vgg16-397923af.pth",
            "https://download.pytorch.org/models/vgg16-397923af.pth",
            "sha256:397923af",
            "checkpoints",
        ),
        Source(
            "vgg19_mat",
            "VGG19 MatConvNet (FaceLift's perceptual weights)",
            "imagenet-vgg-verydeep-19.mat",
            "https://www.vlfeat.org/matconvnet/models/imagenet-vgg-verydeep-19.mat",
            "md5:106118b7cf60435e6d8e04f6a6dc3657",
            "openfacelift",
        ),
        Source(
            "midas_repo",
            "MiDaS code (torch.hub repository)",
            "intel-isl_MiDaS_master",
            "https://github.com/isl-org/MiDaS/zipball/master",
            None,
            "hub_repo",
            "a zip of the repository's master branch: no published checksum",
        ),
        Source(
            "midas",
            "MiDaS DPT_Hybrid weights",
            "dpt_hybrid_384.pt",
            "https://github.com/isl-org/MiDaS/releases/download/v3/dpt_hybrid_384.pt",
            None,
            "checkpoints",
            "MiDaS publishes no checksum for its release files",
        ),
        Source(
            "facelift",
            "FaceLift GS-LRM checkpoint",
            "ckpt_0000000000021125.pt",
            "hf://wlyu/OpenFaceLift/gslrm/ckpt_0000000000021125.pt",
            None,
            "hf",
            "huggingface_hub verifies the file against the hub's own hash",
        ),
    )
}


def source(name: str) -> Source:
    """``SOURCES[name]`` with the overrides of ``GSLRM_WEIGHTS_SOURCES`` applied."""
    if name not in SOURCES:
        raise KeyError(f"unknown network {name!r}: one of {', '.join(SOURCES)}")
    entry = SOURCES[name]
    overrides_file = os.environ.get("GSLRM_WEIGHTS_SOURCES")
    if overrides_file:
        overrides = json.loads(Path(overrides_file).read_text()).get(name, {})
        entry = replace(entry, **{k: v for k, v in overrides.items() if k in ("url", "checksum", "filename")})
    return entry


def destination(entry: Source) -> Path:
    """Where ``entry`` lives on this machine (for ``hf`` sources: the file inside the hub cache's snapshot)."""
    if entry.cache == "checkpoints":
        return Path(torch.hub.get_dir()) / "checkpoints" / entry.filename
    if entry.cache == "hub_repo":
        return Path(torch.hub.get_dir()) / entry.filename
    if entry.cache == "openfacelift":
        base = os.environ.get("GSLRM_OPENFACELIFT_CACHE", str(Path.home() / ".cache" / "openfacelift"))
        return Path(base) / entry.filename
    from huggingface_hub.constants import HF_HUB_CACHE

    repo_id, _ = split_hf(entry.url)
    return Path(HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"


def split_hf(url: str) -> tuple[str, str]:
    """``hf://owner/repo/path/in/repo`` -> (``owner/repo``, ``path/in/repo``)."""
    parts = url[len(HF_PREFIX) :].split("/")
    if not url.startswith(HF_PREFIX) or len(parts) < 3:
        raise ValueError(f"{url}: expected hf://owner/repo/path/to/file")
    return "/".join(parts[:2]), "/".join(parts[2:])
