"""The step-time split (gslrm/lit/step_times.py) by hand: per-step means, the model's forward taken out of
predict_batch's, the backward split where the gradients reach the Gaussians."""

import time

import pytest
import torch

from gslrm.lit.step_times import PHASES, StepTimes


def test_summary_by_hand():
    times = StepTimes()
    times.steps = 2
    for name, seconds in {
        "data": 0.2,
        "render_forward": 1.0,
        "model_forward": 0.4,
        "loss": 0.2,
        "render_backward": 0.6,
        "model_backward": 0.8,
        "optimizer": 0.4,
        "logging": 0.2,
        "callbacks": 0.2,
    }.items():
        times.add(name, seconds)
    summary = times.summary()
    # per step: data .1, model .2, render 1.0/2 - .2 = .3, loss .1, render bwd .3, model bwd .4, opt .2, log .1, cb .1
    assert summary["seconds"]["render_forward"] == pytest.approx(0.3)
    assert summary["step_seconds"] == pytest.approx(1.8)
    assert summary["render_share"] == pytest.approx((0.3 + 0.3) / 1.8)
    assert set(summary["seconds"]) == set(PHASES) and sum(summary["share"].values()) == pytest.approx(1.0)


def test_backward_is_split_where_the_gaussians_get_their_gradients():
    """A 'model' (slow backward) feeding a 'renderer' (slow backward): the hook on the model's output divides them."""

    class Slow(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, seconds):
            ctx.seconds = seconds
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            time.sleep(ctx.seconds)
            return grad, None

    times = StepTimes()
    weights = torch.ones(3, requires_grad=True)
    gaussians = Slow.apply(weights * 2, 0.2)  # the model's part of the graph: 0.2 s backward
    output = type(
        "G",
        (),
        {"means": gaussians, "features": gaussians, "scales": gaussians, "quats": gaussians, "opacities": gaussians},
    )()
    times.watch_gaussians(output)
    loss = Slow.apply(gaussians * 3, 0.1).sum()  # the renderer's part: 0.1 s backward
    with times.backward():
        loss.backward()
    assert times.totals["render_backward"] == pytest.approx(0.1, abs=0.05)
    assert times.totals["model_backward"] == pytest.approx(0.2, abs=0.05)
