"""GS-LRM as in FaceLift: posed images -> transformer over all views' patch tokens -> one Gaussian per pixel
(hard pixel-aligned) plus 2 free Gaussians from learned tokens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from einops import rearrange
from einops.layers.torch import Rearrange
from jaxtyping import Float
from torch import Tensor, nn

from gslrm.cameras import pixel_rays, posed_input
from gslrm.model.gaussians import Gaussians, raw_channels, to_gs
from gslrm.model.hull import HULL_CHANNELS, hull_entry, jitter_masks
from gslrm.model.pixel_decoder import POSED_CHANNELS, LinearPixelDecoder, PixelMLPDecoder
from gslrm.model.transformer import Transformer, init_weights

__all__ = [
    "ModelConfig",
    "GSLRM",
    "ModelOutput",
    "load_facelift_checkpoint",
    "read_checkpoint",
    "pretrained_path",
    "count_parameters",
    "pixels_in_gaussian_order",
    "pixels_from_gaussian_order",
]


@dataclass
class ModelConfig:
    """``conf/model/*.yaml``. ``base`` is FaceLift's GS-LRM (d 1024, 24 layers, 16 heads, ~303.6M parameters)."""

    dim: int = 1024
    depth: int = 24
    head_dim: int = 64
    patch_size: int = 8
    num_token_gaussians: int = 2
    sh_degree: int = 0
    depth_range: float = 1.8  # t = (2 sigmoid(m) - 1) * 1.8 + t0, t0 = -(o.d)
    clip_xyz: bool = False  # FaceLift's flag never took effect (truthy inference dict): off is the faithful default
    gradient_checkpointing: bool = False
    init_from: str | None = None  # weights only (a FaceLift checkpoint or one of ours); ckpt_path resumes instead
    # "linear": FaceLift's (LN + Linear(d -> p*p*14) per token); "mlp": gslrm.model.pixel_decoder (not FaceLift's,
    # so FaceLift checkpoints need "linear")
    pixel_decoder: str = "linear"
    pixel_decoder_hidden: int = 32  # per-pixel features of pixel_decoder=mlp
    # not FaceLift's: each foreground pixel's depth starts where its ray enters the visual hull of the input masks
    # (gslrm.model.hull), and the model gets that depth as 2 more input channels; needs the inputs' alpha (RGBA)
    hull_depth: bool = False
    hull_samples: int = 256  # samples along each ray over t0 +- depth_range (256: 1.4 % of the range apart)
    # training only: the chance that an input view's mask is grown or shrunk by a pixel (half each) before the hull
    # is carved, so the model learns not to trust a rig's masks to the pixel (gslrm.model.hull.jitter_masks)
    hull_mask_noise: float = 0.0


@dataclass
class ModelOutput:
    gaussians: Gaussians
    pixel_means: Float[Tensor, "b v 3 h w"]  # the pixel-aligned means, image layout
    ray_o: Float[Tensor, "b v 3 h w"]
    ray_d: Float[Tensor, "b v 3 h w"]


class GSLRM(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        p, dim = config.patch_size, config.dim
        self.raw_channels = raw_channels(config.sh_degree)
        # key names follow FaceLift's checkpoint: patch_embedder.1.weight, gaussian_position_embeddings, ...
        self.patch_embedder = nn.Sequential(
            Rearrange("b v c (hp ph) (wp pw) -> b (v hp wp) (ph pw c)", ph=p, pw=p),
            nn.Linear((POSED_CHANNELS + (HULL_CHANNELS if config.hull_depth else 0)) * p * p, dim, bias=False),
        )
        self.gaussian_position_embeddings = nn.Parameter(torch.empty(config.num_token_gaussians, dim))
        self.input_layer_norm = nn.LayerNorm(dim, bias=False)
        self.transformer_layers = Transformer(dim, config.depth, config.head_dim, config.gradient_checkpointing)
        self.gaussian_upsampler = TokenDecoder(dim, self.raw_channels)
        if config.pixel_decoder == "linear":
            self.pixel_gaussian_decoder = LinearPixelDecoder(dim, p, self.raw_channels)
        elif config.pixel_decoder == "mlp":
            self.pixel_gaussian_decoder = PixelMLPDecoder(dim, p, self.raw_channels, config.pixel_decoder_hidden)
        else:
            raise ValueError(f"model.pixel_decoder: expected 'linear' or 'mlp', not {config.pixel_decoder!r}")
        self.apply(init_weights)
        nn.init.trunc_normal_(self.gaussian_position_embeddings, std=0.02)

    def forward(
        self,
        image: Float[Tensor, "b v c h w"],
        c2w: Float[Tensor, "b v 4 4"],
        fxfycxcy: Float[Tensor, "b v 4"],
        clip_xyz: bool | None = None,
    ) -> ModelOutput:
        """``image``: the input views' RGB, or RGBA (the alpha is read by ``model.hull_depth`` only). ``clip_xyz``
        overrides the config (the points-distance warmup turns it off)."""
        config = self.config
        clip_xyz = config.clip_xyz if clip_xyz is None else clip_xyz
        batch, views, _, height, width = image.shape
        if height % config.patch_size or width % config.patch_size:
            raise ValueError(f"image size {height}x{width} is not a multiple of patch_size={config.patch_size}")
        if config.hull_depth and image.shape[2] != 4:
            raise ValueError(
                f"model.hull_depth needs the input views' masks: RGBA images, got {image.shape[2]} channels"
            )
        ray_o, ray_d, posed, model_input, start = self.posed_inputs(image, c2w, fxfycxcy)
        image_tokens = self.patch_embedder(model_input)
        tokens = torch.cat([self.gaussian_position_embeddings.expand(batch, -1, -1), image_tokens], dim=1)
        tokens = self.transformer_layers(self.input_layer_norm(tokens))
        num_tokens = config.num_token_gaussians
        token_raw = self.gaussian_upsampler(tokens[:, :num_tokens]).float()
        pixel_raw = self.pixel_gaussian_decoder(tokens[:, num_tokens:], posed).float()  # b v c h w
        p = config.patch_size
        # hard pixel alignment: the mean of the 3 xyz channels becomes a distance along the unit ray, around t0
        # (FaceLift) or the hull's entry (model.hull_depth)
        weight = torch.sigmoid(pixel_raw[:, :, :3].mean(dim=2, keepdim=True))
        distance = (2.0 * weight - 1.0) * config.depth_range + start
        pixel_means = ray_o + distance * ray_d
        # Gaussians listed as FaceLift does: tokens first, then the pixels (pixels_in_gaussian_order)
        raw = torch.cat([token_raw, pixels_in_gaussian_order(pixel_raw, p)], dim=1)
        means = torch.cat([token_raw[..., :3], pixels_in_gaussian_order(pixel_means, p)], dim=1)
        gaussians = to_gs(raw, means=means, sh_degree=config.sh_degree, clip_xyz=clip_xyz)
        return ModelOutput(gaussians=gaussians, pixel_means=pixel_means, ray_o=ray_o, ray_d=ray_d)

    @torch.no_grad()
    def posed_inputs(
        self, image: Tensor, c2w: Tensor, fxfycxcy: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The pixels' rays, FaceLift's 9-channel posed input, what the patch embedding reads (the posed input, and
        the hull's 2 channels with ``hull_depth``) and the distance each pixel's depth is measured from (t0, the ray's
        point nearest the origin, or the hull's entry), all in fp32 whatever the autocast."""
        config = self.config
        height, width = image.shape[-2:]
        with torch.autocast(device_type=image.device.type, enabled=False):
            ray_o, ray_d = pixel_rays(c2w.float(), fxfycxcy.float(), height, width)
            posed = posed_input(image[:, :, :3].float(), ray_o, ray_d)
            t0 = -(ray_o * ray_d).sum(dim=2, keepdim=True)
            if not config.hull_depth:
                return ray_o, ray_d, posed, posed, t0
            alpha = image[:, :, 3].float()
            if self.training and config.hull_mask_noise > 0:
                alpha = jitter_masks(alpha, config.hull_mask_noise)
            span = config.depth_range
            entry, found = hull_entry(alpha, c2w.float(), fxfycxcy.float(), ray_o, ray_d, span, config.hull_samples)
            hull = torch.stack([(entry - t0[:, :, 0]) / span, found.float()], dim=2)
            return ray_o, ray_d, posed, torch.cat([posed, hull], dim=2), entry[:, :, None]


def pixels_in_gaussian_order(maps: Tensor, patch_size: int) -> Tensor:
    """Per-pixel maps [b, v, c, h, w] -> [b, v*h*w, c] in the order the model lists its pixel Gaussians (after its
    token Gaussians): FaceLift's (view, patch row, patch col, row in the patch, column in the patch)."""
    return rearrange(maps, "b v c (hp ph) (wp pw) -> b (v hp wp ph pw) c", ph=patch_size, pw=patch_size)


def pixels_from_gaussian_order(values: Tensor, views: int, height: int, patch_size: int) -> Tensor:
    """The inverse of ``pixels_in_gaussian_order``: [b, v*h*w, c] pixel Gaussians' values -> [b, v, c, h, w]."""
    return rearrange(
        values,
        "b (v hp wp ph pw) c -> b v c (hp ph) (wp pw)",
        v=views,
        hp=height // patch_size,
        ph=patch_size,
        pw=patch_size,
    )


class TokenDecoder(nn.Module):
    """FaceLift's ``GaussiansUpsampler``: LN + Linear(d -> 14) on each learned token (free, not pixel-aligned)."""

    def __init__(self, dim: int, channels: int) -> None:
        super().__init__()
        self.layernorm = nn.LayerNorm(dim, bias=False)
        self.linear = nn.Linear(dim, channels, bias=False)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.linear(self.layernorm(tokens))


def count_parameters(config: ModelConfig) -> int:
    """Parameter count of a configuration, computed on the meta device (no memory is allocated)."""
    with torch.device("meta"):
        return sum(p.numel() for p in GSLRM(config).parameters())


LOSS_NETWORK_PREFIX = "loss_calculator."
HULL_INPUT_KEY = "patch_embedder.1.weight"  # model.hull_depth widens it by the hull's channels  # FaceLift saves its frozen VGG/LPIPS inside the model state dict


def load_facelift_checkpoint(
    model: GSLRM, path: str | Path, checkpoint: dict | None = None, config_key: str = "model.init_from"
) -> dict[str, list[str]]:
    """Load weights only from a FaceLift checkpoint (``{"model": state_dict}``) or a gslrm Lightning checkpoint.

    Every model key must be present; frozen loss-network keys are ignored; anything else is an error listing the
    unmatched keys. Loaded with ``weights_only=True`` (no code from the file runs); ``checkpoint`` is the file's
    content when the caller has already read it that way. Errors name ``config_key``.
    """
    if checkpoint is None:
        path = pretrained_path(path)
        checkpoint = read_checkpoint(path, config_key)
    path = Path(path)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{config_key}: {path}: expected a dict checkpoint, got {type(checkpoint).__name__}")
    if "model" in checkpoint:
        state = checkpoint["model"]
    elif "state_dict" in checkpoint:  # ours: LightningModule keys are prefixed with "model."
        state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    else:
        state = checkpoint
    state = {k.removeprefix("module."): v for k, v in state.items()}  # DDP-wrapped saves
    ignored = sorted(k for k in state if k.startswith(LOSS_NETWORK_PREFIX))
    state = {k: v for k, v in state.items() if not k.startswith(LOSS_NETWORK_PREFIX)}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or mismatched:
        details = []
        if missing:
            details.append(f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            details.append(f"unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if mismatched:
            shapes = [f"{k}: {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}" for k in mismatched[:4]]
            details.append(f"shape mismatch {shapes}")
        if mismatched == [HULL_INPUT_KEY]:  # the one difference model.hull_depth makes
            trained_with = state[HULL_INPUT_KEY].shape[1] > expected[HULL_INPUT_KEY].shape[1]
            details.append(f"the checkpoint was trained with model.hull_depth={str(trained_with).lower()}: set that")
        raise ValueError(f"{config_key}: {path}: keys do not match the model config: " + "; ".join(details))
    model.load_state_dict(state, strict=True)
    return {"ignored": ignored}


def pretrained_path(path: str | Path) -> Path:
    """``facelift`` (FaceLift's released GS-LRM) or ``hf://owner/repo/file`` through huggingface_hub (its cache,
    ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``), downloaded on first use; anything else is a local path."""
    text = str(path)
    if text == "facelift":
        from gslrm.weights import ensure

        return ensure("facelift")
    if text.startswith("hf://"):
        from gslrm.weights.download import fetch_hf_url

        return fetch_hf_url(text)
    return Path(path)


def read_checkpoint(path: str | Path, config_key: str = "model.init_from"):
    """``torch.load`` with ``weights_only=True``: tensors and plain containers only, never code from the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{config_key}: {path}: file not found")
    return torch.load(path, map_location="cpu", weights_only=True)
