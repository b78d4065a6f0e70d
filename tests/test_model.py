import pytest
import torch

from gslrm.cameras import turntable_cameras
from gslrm.model.gslrm import (
    GSLRM,
    ModelConfig,
    count_parameters,
    load_facelift_checkpoint,
    pixels_from_gaussian_order,
    pixels_in_gaussian_order,
)

TINY = dict(dim=64, depth=2, head_dim=32)


def inputs(batch=2, views=3, size=16):
    c2w, k = turntable_cameras(views, size, elevation_deg=15.0)
    image = torch.rand(batch, views, 3, size, size)
    return image, c2w.expand(batch, -1, -1, -1).clone(), k.expand(batch, -1, -1).clone()


def test_facelift_parameter_count_without_allocating():
    assert count_parameters(ModelConfig()) == 303_565_824  # reference: ~303.57M
    per_block = count_parameters(ModelConfig(depth=1)) - count_parameters(ModelConfig(depth=0))
    assert per_block == 12_584_960


def test_output_shapes_and_pixel_alignment():
    torch.manual_seed(0)
    model = GSLRM(ModelConfig(**TINY))
    image, c2w, k = inputs()
    out = model(image, c2w, k)
    g = out.gaussians
    assert g.means.shape == (2, 3 * 16 * 16 + 2, 3) and g.features.shape == (2, 3 * 256 + 2, 1, 3)
    assert g.scales.shape == (2, 770, 3) and g.quats.shape == (2, 770, 4) and g.opacities.shape == (2, 770)
    # every pixel-aligned mean lies on its pixel's ray
    offset = out.pixel_means - out.ray_o
    cross = torch.linalg.cross(offset, out.ray_d, dim=2)
    assert cross.norm(dim=2).max() < 1e-5
    # and within t0 +- 1.8 along it
    t = (offset * out.ray_d).sum(2)
    t0 = -(out.ray_o * out.ray_d).sum(2)
    assert ((t - t0).abs() <= 1.8 + 1e-5).all()
    # the Gaussian list holds the same means in FaceLift's (view, patch row, patch col, row, col) order
    first_patch = out.pixel_means[:, 0, :, :8, :8].flatten(2).transpose(1, 2)
    assert torch.allclose(g.means[:, 2 : 2 + 64], first_patch)
    assert torch.equal(g.means[:, 2:], pixels_in_gaussian_order(out.pixel_means, 8))
    back = pixels_from_gaussian_order(g.means[:, 2:], views=3, height=16, patch_size=8)
    assert torch.equal(back, out.pixel_means)  # the inverse


def test_bf16_autocast_and_checkpointing_agree():
    torch.manual_seed(0)
    model = GSLRM(ModelConfig(**TINY))
    image, c2w, k = inputs(batch=1, views=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(image, c2w, k)
    assert out.gaussians.means.dtype == torch.float32 and torch.isfinite(out.gaussians.means).all()

    reference = model(image, c2w, k).gaussians.features.sum()
    reference.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.transformer_layers.gradient_checkpointing = True
    model(image, c2w, k).gaussians.features.sum().backward()
    for expected, p in zip(grads, model.parameters(), strict=True):
        assert torch.allclose(p.grad, expected, atol=1e-6)


def facelift_state_dict(dim, depth, patch=8, channels=14):
    """A checkpoint built from FaceLift's key names and shapes, independent of our modules."""
    g = torch.Generator().manual_seed(1)
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.05  # noqa: E731
    state = {
        "patch_embedder.1.weight": r(dim, 9 * patch * patch),
        "gaussian_position_embeddings": r(2, dim),
        "input_layer_norm.weight": 1 + r(dim),
        "gaussian_upsampler.layernorm.weight": 1 + r(dim),
        "gaussian_upsampler.linear.weight": r(channels, dim),
        "pixel_gaussian_decoder.0.weight": 1 + r(dim),
        "pixel_gaussian_decoder.1.weight": r(patch * patch * channels, dim),
        # frozen loss network saved inside FaceLift's model: must be ignored
        "loss_calculator.perceptual_loss_module.net.conv1.weight": r(64, 3, 3, 3),
        "loss_calculator.perceptual_loss_module.net.conv1.bias": r(64),
    }
    for i in range(depth):
        prefix = f"transformer_layers.{i}."
        state |= {
            prefix + "norm1.weight": 1 + r(dim),
            prefix + "norm2.weight": 1 + r(dim),
            prefix + "attn.to_qkv.weight": r(3 * dim, dim),
            prefix + "attn.fc.weight": r(dim, dim),
            prefix + "mlp.mlp.0.weight": r(4 * dim, dim),
            prefix + "mlp.mlp.2.weight": r(dim, 4 * dim),
        }
    return state


def test_loads_facelift_checkpoint_like_hand_copied_weights(tmp_path):
    config = ModelConfig(**TINY)
    state = facelift_state_dict(config.dim, config.depth)
    torch.save({"model": state, "optimizer": {}, "fwdbwd_pass_step": 21125}, tmp_path / "ckpt.pt")
    loaded = GSLRM(config)
    report = load_facelift_checkpoint(loaded, tmp_path / "ckpt.pt")
    assert len(report["ignored"]) == 2

    by_hand = GSLRM(config)
    with torch.no_grad():
        by_hand.patch_embedder[1].weight.copy_(state["patch_embedder.1.weight"])
        by_hand.gaussian_position_embeddings.copy_(state["gaussian_position_embeddings"])
        by_hand.input_layer_norm.weight.copy_(state["input_layer_norm.weight"])
        by_hand.gaussian_upsampler.layernorm.weight.copy_(state["gaussian_upsampler.layernorm.weight"])
        by_hand.gaussian_upsampler.linear.weight.copy_(state["gaussian_upsampler.linear.weight"])
        by_hand.pixel_gaussian_decoder[0].weight.copy_(state["pixel_gaussian_decoder.0.weight"])
        by_hand.pixel_gaussian_decoder[1].weight.copy_(state["pixel_gaussian_decoder.1.weight"])
        for i, block in enumerate(by_hand.transformer_layers):
            block.norm1.weight.copy_(state[f"transformer_layers.{i}.norm1.weight"])
            block.norm2.weight.copy_(state[f"transformer_layers.{i}.norm2.weight"])
            block.attn.to_qkv.weight.copy_(state[f"transformer_layers.{i}.attn.to_qkv.weight"])
            block.attn.fc.weight.copy_(state[f"transformer_layers.{i}.attn.fc.weight"])
            block.mlp.mlp[0].weight.copy_(state[f"transformer_layers.{i}.mlp.mlp.0.weight"])
            block.mlp.mlp[2].weight.copy_(state[f"transformer_layers.{i}.mlp.mlp.2.weight"])
    image, c2w, k = inputs(batch=1, views=2)
    a, b = loaded(image, c2w, k).gaussians, by_hand(image, c2w, k).gaussians
    for field in ["means", "features", "scales", "quats", "opacities"]:
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_checkpoint_key_errors_list_the_keys(tmp_path):
    config = ModelConfig(**TINY)
    state = facelift_state_dict(config.dim, config.depth)
    state["extra_head.weight"] = torch.zeros(1)
    del state["transformer_layers.1.attn.fc.weight"]
    torch.save({"model": state}, tmp_path / "bad.pt")
    with pytest.raises(ValueError) as info:
        load_facelift_checkpoint(GSLRM(config), tmp_path / "bad.pt")
    message = str(info.value)
    assert (
        "missing ['transformer_layers.1.attn.fc.weight']" in message and "unexpected ['extra_head.weight']" in message
    )
    with pytest.raises(FileNotFoundError, match="model.init_from"):
        load_facelift_checkpoint(GSLRM(config), tmp_path / "nope.pt")


def test_checkpoint_with_code_is_refused(tmp_path):
    """weights_only=True: a pickle that would run code is rejected, not executed."""

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"model": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="[Ww]eights only"):
        load_facelift_checkpoint(GSLRM(ModelConfig(**TINY)), tmp_path / "evil.pt")


def test_pixel_mlp_decoder_starts_from_each_pixels_colour_and_learns_per_pixel():
    """model.pixel_decoder=mlp: with its last layer at zero, every pixel's Gaussian has exactly that pixel's colour
    (the colour prior), sits on its ray like FaceLift's, and gradients reach the transformer."""
    torch.manual_seed(0)
    model = GSLRM(ModelConfig(**TINY, pixel_decoder="mlp", pixel_decoder_hidden=8))
    with torch.no_grad():
        model.pixel_gaussian_decoder.pixel_mlp[-1].weight.zero_()
        model.pixel_gaussian_decoder.pixel_mlp[-1].bias.zero_()
    image, c2w, k = inputs(views=2)
    out = model(image, c2w, k)
    g = out.gaussians
    assert g.means.shape == (2, 2 * 16 * 16 + 2, 3)
    # pixels in FaceLift's (view, patch row, patch col, row, col) order: the first patch is view 0's top-left 8x8
    first_patch = image[:, 0, :, :8, :8].flatten(2).transpose(1, 2)
    assert torch.allclose(g.colors[:, 2 : 2 + 64], first_patch, atol=1e-6)
    # zero raw channels elsewhere: FaceLift's activations at x = 0 (scale 0.1003, opacity sigmoid(-2), t = t0)
    assert torch.allclose(g.scales[:, 2:], torch.full_like(g.scales[:, 2:], 0.10026), atol=1e-4)
    assert torch.allclose(g.opacities[:, 2:], torch.full_like(g.opacities[:, 2:], 0.11920), atol=1e-4)
    t = ((out.pixel_means - out.ray_o) * out.ray_d).sum(2)
    assert torch.allclose(t, -(out.ray_o * out.ray_d).sum(2), atol=1e-5)

    model.zero_grad()
    model(image, c2w, k).gaussians.opacities.sum().backward()
    assert model.transformer_layers[0].attn.to_qkv.weight.grad.abs().sum() > 0
    # FaceLift checkpoints name a linear head: loading one into the mlp head is refused with the keys named
    state = {f"model.{key}": value for key, value in GSLRM(ModelConfig(**TINY)).state_dict().items()}
    with pytest.raises(ValueError, match="pixel_gaussian_decoder"):
        load_facelift_checkpoint(model, "linear.ckpt", checkpoint={"state_dict": state})
    with pytest.raises(ValueError, match="model.pixel_decoder"):
        GSLRM(ModelConfig(**TINY, pixel_decoder="conv"))
