"""The LightningModule's step rules, checked in-process on the generated rodent data."""

import math

import lightning as L
import pytest
import torch
from conftest import composition_error

from gslrm.data.datamodule import ViewDataModule
from gslrm.data.dataset import DataConfig
from gslrm.lit.module import GSLRMModule
from gslrm.lit.optim import OptimConfig, build_optimizer, restarted_warmup_cosine, warmup_cosine
from gslrm.losses.computer import LossConfig
from gslrm.model.gslrm import ModelConfig
from gslrm.rig import NormalizationConfig

TINY = ModelConfig(dim=32, depth=1, head_dim=16)


def make_module(**optim):
    loss = LossConfig(perceptual={"weight": 0.0})
    return GSLRMModule(TINY, loss, OptimConfig(warmup_steps=2, **optim), num_input_views=4, val_lpips=False)


def fit(module, rodent_root, steps, **data_options):
    data = DataConfig(
        root=str(rodent_root),
        image_size=16,
        num_workers=0,
        batch_size=1,
        normalization=NormalizationConfig(up=[0, 0, 1]),
        **data_options,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=ViewDataModule(data))
    return trainer


def test_skip_rule_known_cases():
    module = make_module(allowed_gradnorm_factor=20.0, skip_warmup_steps=3)
    finite = torch.tensor(1.0)
    assert module.should_skip(torch.tensor(float("nan")), finite)
    assert module.should_skip(finite, torch.tensor(float("inf")))
    assert not module.should_skip(finite, torch.tensor(1e6))  # the running mean has not settled yet
    for norm in (1.0, 2.0, 3.0):
        module.record_grad_norm(torch.tensor(norm))
    # mean = 0.99 * (0.99 * 1 + 0.01 * 2) + 0.01 * 3 = 1.0299
    assert torch.isclose(module.grad_norm_mean, torch.tensor(1.0299))
    assert not module.should_skip(finite, torch.tensor(20.0))
    assert module.should_skip(finite, torch.tensor(20.7))  # > 20 x 1.0299


def test_nan_loss_step_is_skipped_counted_and_the_run_goes_on(rodent_root):
    module = make_module()
    original = module.losses.forward
    calls = []

    def poisoned(inputs, step):
        out = original(inputs, step)
        calls.append(step)
        if len(calls) == 2:
            out["loss"] = out["loss"] * float("nan")
        return out

    module.losses.forward = poisoned
    trainer = fit(module, rodent_root, steps=3)
    assert int(module.skipped_steps) == 1 and int(module.accepted_steps) == 3
    assert calls == [0, 1, 2, 3] and trainer.global_step == 3  # the warmup clock counts the skipped pass too
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_weight_decay_groups_and_schedule():
    module = make_module()
    optimizer = build_optimizer(module.model, OptimConfig())
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert optimizer.defaults["betas"] == (0.9, 0.95)
    assert warmup_cosine(0, 10, 110) == 0.0 and warmup_cosine(5, 10, 110) == 0.5
    assert warmup_cosine(10, 10, 110) == 1.0 and abs(warmup_cosine(60, 10, 110) - 0.5) < 1e-12
    assert warmup_cosine(110, 10, 110) == 0.0 and warmup_cosine(500, 10, 110) == 0.0


def test_the_schedule_restarts_where_it_is_told():
    # segments [0, 110) and [110, 310): each warms up over 10 steps and decays to 0 at its end
    schedule = lambda step: restarted_warmup_cosine(step, 10, 310, [110], 0.5)  # noqa: E731
    assert schedule(5) == 0.5 and schedule(10) == 1.0 and abs(schedule(60) - 0.5) < 1e-12
    assert schedule(109) == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))  # the first cosine's last step
    assert schedule(110) == 0.0 and schedule(115) == 0.25 and schedule(120) == 0.5  # re-warmed to the restart peak
    assert abs(schedule(215) - 0.25) < 1e-12 and schedule(310) == 0.0  # halfway down the second cosine; its end
    assert all(restarted_warmup_cosine(s, 10, 110) == warmup_cosine(s, 10, 110) for s in range(200))
    assert restarted_warmup_cosine(50, 10, 110, [400]) == warmup_cosine(50, 10, 110)  # a restart after the end
    # the module's scheduler is this function of the step
    module = make_module()
    module.optim_config = OptimConfig(lr=1e-3, warmup_steps=10, total_steps=310, restart_at=[110], restart_peak=0.5)
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    for _ in range(120):
        scheduler.optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(0.5e-3)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"restart_at": [300, 100]}, "optim.restart_at"),
        ({"restart_at": [0]}, "optim.restart_at"),
        ({"restart_peak": 0.0}, "optim.restart_peak"),
        ({"restart_peak": 2.0}, "optim.restart_peak"),
    ],
)
def test_bad_restarts_are_named(fields, message):
    with pytest.raises(ValueError, match=message):
        OptimConfig(**fields)


def test_frozen_loss_networks_stay_out_of_checkpoints(tmp_path, rodent_root):
    loss = LossConfig(perceptual={"weight": 0.5, "pretrained": False})
    module = GSLRMModule(TINY, loss, OptimConfig(warmup_steps=1), num_input_views=4, val_lpips=False)
    trainer = fit(module, rodent_root, steps=1)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    state = torch.load(tmp_path / "m.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert not any(k.startswith("losses.") for k in state) and any(k.startswith("model.") for k in state)
    restored = GSLRMModule.load_from_checkpoint(
        tmp_path / "m.ckpt", model=TINY, loss=loss, optim=OptimConfig(), val_lpips=False
    )
    for key, value in module.model.state_dict().items():
        assert torch.equal(restored.model.state_dict()[key], value)


def test_recomposite_moves_the_background_through_alpha():
    """fg 0.2, alpha 0.25 on white: 0.2*0.25 + 1*0.75 = 0.8; on black it is 0.05, on 0.4 it is 0.35."""
    from gslrm.losses.backgrounds import recomposite

    image = torch.tensor([0.8, 0.8, 0.8, 0.25]).view(1, 1, 4, 1, 1)
    moved = recomposite(image, torch.ones(1, 3), torch.tensor([[0.0, 0.4, 1.0]]))
    assert torch.allclose(moved[0, 0, :, 0, 0], torch.tensor([0.05, 0.35, 0.8, 0.25]))
    opaque = torch.tensor([0.3, 0.6, 0.9, 1.0]).view(1, 1, 4, 1, 1)  # the animal itself never changes
    assert torch.equal(recomposite(opaque, torch.ones(1, 3), torch.zeros(1, 3)), opaque)


def test_random_background_supervision_renders_and_targets_on_one_new_colour(rodent_root):
    """loss.background=random: renders and targets share a fresh colour per sample; the model's inputs keep the data's
    white (were they recomposited too, opaque background Gaussians would reproduce the colour again)."""
    module = GSLRMModule(
        TINY,
        LossConfig(perceptual={"weight": 0.0}, background="random"),
        OptimConfig(warmup_steps=2),
        num_input_views=4,
        val_lpips=False,
    )
    seen = {}
    model_forward, loss_forward = module.model.forward, module.losses.forward

    def model_spy(image, *args, **kwargs):
        seen["input"] = image.detach().clone()
        return model_forward(image, *args, **kwargs)

    def loss_spy(inputs, step):
        seen.setdefault("losses", []).append(inputs)
        return loss_forward(inputs, step)

    module.model.forward, module.losses.forward = model_spy, loss_spy
    fit(module, rodent_root, 2)
    inputs = seen["losses"][-1]
    background = inputs.background[0]
    assert not torch.allclose(background, torch.ones(3))  # not the data's white
    # background pixels (the rodent images are RGB: masked where every channel > 250/255, so they move to within
    # 5/255 of the new colour; RGBA images move exactly, test_recomposite_moves_the_background_through_alpha)
    empty = inputs.mask[0, :, 0] == 0
    target = inputs.target[0].permute(1, 0, 2, 3)[:, empty]
    assert (target - background[:, None]).abs().max() <= 5 / 255 + 1e-6
    model_input = seen["input"][0].permute(1, 0, 2, 3)[:, empty[: seen["input"].shape[1]]]
    assert (model_input >= 250 / 255).all()  # the inputs' background stays the data's white
    assert seen["losses"][0].background[0].tolist() != background.tolist()  # a new colour every step
    message = composition_error("config", "loss.background=green")
    assert "loss.background=green" in message and "Invalid value 'green', expected one of [data, random]" in message


def test_progressive_resolution_trains_each_step_at_its_scheduled_size(rodent_root):
    """data.image_size_schedule [[0, 8], [2, 16]]: steps 0-1 see 8 px inputs and are supervised at 8 px (renders and
    targets alike), steps 2-3 at the loader's 16 px; the logged metrics/image_size follows."""
    module = make_module()
    seen = {"inputs": [], "targets": [], "renders": []}
    model_forward, loss_forward = module.model.forward, module.losses.forward

    def model_spy(image, *args, **kwargs):
        seen["inputs"].append(image.shape[-1])
        return model_forward(image, *args, **kwargs)

    def loss_spy(inputs, step):
        seen["targets"].append(inputs.target.shape[-1])
        seen["renders"].append(inputs.render.shape[-1])
        return loss_forward(inputs, step)

    module.model.forward, module.losses.forward = model_spy, loss_spy
    trainer = fit(module, rodent_root, 4, image_size_schedule=[[0, 8], [2, 16]])
    assert seen == {"inputs": [8, 8, 16, 16], "targets": [8, 8, 16, 16], "renders": [8, 8, 16, 16]}
    assert float(trainer.callback_metrics["metrics/image_size"]) == 16.0


@pytest.mark.parametrize(
    "flags, native",
    [
        ("fpu avx2 avx512f avx512bw avx512_bf16", True),  # AMD Zen 4, Intel Cooper Lake
        ("fpu avx2 avx512f amx_bf16 amx_tile", True),  # Intel Sapphire Rapids
        ("fpu avx2 avx512f avx512bw avx512vl", False),  # AVX-512 without bf16: emulated, slower than fp32
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, flags, native):
    from gslrm.config import cpu_has_native_bf16

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: a CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert cpu_has_native_bf16(cpuinfo) is native
    assert cpu_has_native_bf16(tmp_path / "missing") is False  # not Linux: fp32


def test_the_cpu_trains_in_bf16_only_where_asked_and_native(monkeypatch):
    from gslrm import config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for native in (True, False):
        monkeypatch.setattr(config, "cpu_has_native_bf16", lambda native=native: native)
        assert config.default_precision() == "32-true"
        assert config.default_precision("bf16_if_native") == ("bf16-mixed" if native else "32-true")
    with pytest.raises(ValueError, match="gslrm_precision: expected fp32 or bf16_if_native, got 'bf16'"):
        config.default_precision("bf16")
