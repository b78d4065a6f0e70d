"""Progressive resolution (data.image_size_schedule): the schedule's rule and a batch made smaller, by hand."""

import pytest
import torch

from gslrm.data.dataset import DataConfig
from gslrm.data.resolution import ResolutionSchedule, resize_batch


def test_schedule_sizes_known_answers():
    schedule = ResolutionSchedule.parse([[0, 32], [1200, 48], [1500, 64]], image_size=64)
    assert [schedule.size_at(step) for step in (0, 1199, 1200, 1499, 1500, 10**6)] == [32, 32, 48, 48, 64, 64]
    late = ResolutionSchedule.parse([[100, 16]], image_size=64)  # before its first step: the loader's size
    assert (late.size_at(99), late.size_at(100)) == (64, 16)
    assert not ResolutionSchedule.parse([], image_size=64) and late
    # data.image_size=16 under a schedule [[0, 32], [2400, 64]]: sizes above the loader's are the loader's
    capped = ResolutionSchedule.parse([[0, 32], [2400, 64]], image_size=16)
    assert (capped.size_at(0), capped.size_at(2400)) == (16, 16)


@pytest.mark.parametrize(
    "pairs, message",
    [
        ([[0, 32], [0, 64]], r"step 0 after step 0: steps must increase"),
        ([[-1, 32]], r"\[-1, 32\]: expected a step >= 0 and a size of at least 8 pixels"),
        ([[0, 4]], r"\[0, 4\]: expected a step >= 0 and a size of at least 8 pixels"),
        ([[0, 32, 1]], r"\[0, 32, 1\]: expected \[step, image size\], two integers"),
        ([32], r"32: expected \[step, image size\], two integers"),
    ],
)
def test_a_bad_schedule_fails_at_start_naming_the_key(pairs, message):
    with pytest.raises(ValueError, match=r"^data.image_size_schedule: " + message):
        DataConfig(image_size=64, image_size_schedule=pairs)


def test_a_batch_made_smaller_known_answer():
    """4x4 -> 2x2: each pixel the mean of its 2x2 block; intrinsics halved (pixel centres at +0.5: a camera with its
    principal point at the image centre keeps it there); depth sampled, never blended (nearest-exact: rows and
    columns 1 and 3); a prior map averaged; other keys untouched."""
    ramp = torch.arange(16.0).reshape(4, 4)
    image = ramp.expand(1, 1, 4, 4, 4).clone()  # [b, v, c, h, w]: every channel the ramp
    depth = (ramp + 100.0)[None, None, None]
    batch = {
        "image": image,
        "fxfycxcy": torch.tensor([[[8.0, 6.0, 2.0, 2.0]]]),
        "depth": depth,
        "depth_prior": ramp[None, None, None].clone(),
        "c2w": torch.eye(4)[None, None],
    }
    small = resize_batch(batch, 2)
    block_means = torch.tensor([[2.5, 4.5], [10.5, 12.5]])  # (0+1+4+5)/4, (2+3+6+7)/4, ...
    assert torch.equal(small["image"], block_means.expand(1, 1, 4, 2, 2))
    assert torch.equal(small["fxfycxcy"], torch.tensor([[[4.0, 3.0, 1.0, 1.0]]]))
    assert torch.equal(small["depth"][0, 0, 0], torch.tensor([[105.0, 107.0], [113.0, 115.0]]))
    assert torch.equal(small["depth_prior"][0, 0, 0], block_means)
    assert small["c2w"] is batch["c2w"] and batch["image"].shape[-1] == 4  # the loader's batch is not changed
    assert resize_batch(batch, 4) is batch


def test_the_long_recipe_is_the_default_model_for_longer():
    """experiment=rodent_long: 8000 steps at 32 px, then 22000 at 64 px, on the default's animals and 3584 more in
    a data root of its own (the default's stays as it is), and the default run's model (as it was measured: without
    the masks' hull), loss and optimizer (its schedule starting again at its switch), so its last.ckpt initialises
    that model (model.init_from with model.hull_depth=false)."""
    from conftest import compose

    default, long = compose("config"), compose("config", "experiment=rodent_long")
    pairs = [list(pair) for pair in long.data.image_size_schedule]
    schedule = ResolutionSchedule.parse(pairs, long.data.image_size)
    assert [schedule.size_at(step) for step in (0, 7999, 8000, 29999)] == [32, 32, 64, 64]
    assert long.trainer.max_steps == 30000 and default.trainer.max_steps == 5500
    assert long.data.generator == {**default.data.generator, "extra_train_samples": 3584}
    assert long.data.root != default.data.root and long.data.root.startswith(default.paths.data_dir)
    assert default.model.hull_depth and not long.model.hull_depth
    assert {**long.model, "hull_depth": True} == default.model and long.loss == default.loss
    assert {**long.optim, "restart_at": None} == {**default.optim, "restart_at": None}
    assert list(default.optim.restart_at) == [4200] and list(long.optim.restart_at) == [8000]


@pytest.mark.parametrize(
    "overrides, restarts",
    [
        ((), [4200]),  # the default schedule's switch
        (("data.image_size_schedule=[[0,16],[10,32],[20,64]]",), [10, 20]),
        (("data.image_size_schedule=[]",), []),  # no switch, no restart
        (("data.image_size_schedule=[[0,32],[100,64]]", "optim.restart_at=[]"), []),  # one cosine, asked for
        (("optim=default",), []),  # FaceLift's optimizer: its one cosine
    ],
)
def test_the_learning_rate_restarts_where_the_resolution_switches(overrides, restarts):
    from conftest import compose

    from gslrm.config import build

    assert build(compose("config", *overrides).optim).restart_at == restarts
