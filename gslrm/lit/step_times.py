"""Where a training step's wall time goes: ``callbacks.step_times.enabled=true`` (what ``python -m gslrm.bench``'s
step table runs). Off by default: then the module's ``step_phase`` is a no-op.

Phases of one step, in order:
- ``data``: from the end of the previous step (after every callback) to the start of this one: the DataLoader.
- ``model_forward`` / ``render_forward``: the transformer (forward hooks on the model), and the rest of
  ``predict_batch`` (projection, SH, rasterization of every view).
- ``loss``: the loss terms' forward.
- ``render_backward`` / ``model_backward``: ``backward()`` split where the gradients reach the Gaussians (tensor hooks
  on them): the loss and the renderer before that, the transformer after.
- ``optimizer``: gradient clean-up and clipping, AdamW, zero_grad, the schedule.
- ``logging``: the step's ``log_dict`` calls.
- ``callbacks``: from the end of ``training_step`` to the end of the last callback's ``on_train_batch_end``
  (checkpoints, pictures, the progress bar, the loggers' writes).

On a GPU each phase boundary synchronizes the device (only while measuring), so the kernels are counted in the phase
that launched them; the synchronizations themselves cost a little.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

__all__ = ["StepTimes", "StepTimer", "step_phase", "measuring_step_times", "PHASES"]

PHASES = (
    "data",
    "model_forward",
    "render_forward",
    "loss",
    "render_backward",
    "model_backward",
    "optimizer",
    "logging",
    "callbacks",
)
RENDER_PHASES = ("render_forward", "render_backward")


class StepTimes:
    """Seconds per phase, summed over the measured steps."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.steps = 0
        self.active = False  # inside a measured training step (the model's hooks also fire in validation)
        self._model_started = 0.0
        self._gradients_at = 0.0  # when the last Gaussian tensor received its gradient

    def add(self, name: str, seconds: float) -> None:
        self.totals[name] += seconds

    @staticmethod
    def now() -> float:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()  # asynchronous kernels belong to the phase that launched them
        return time.perf_counter()

    @contextmanager
    def phase(self, name: str):
        started = self.now()
        try:
            yield
        finally:
            self.add(name, self.now() - started)

    def watch_model(self, model) -> None:
        def started(*_) -> None:
            if self.active:
                self._model_started = self.now()

        def ended(*_) -> None:
            if self.active:
                self.add("model_forward", self.now() - self._model_started)

        model.register_forward_pre_hook(started)
        model.register_forward_hook(ended)

    def watch_gaussians(self, gaussians) -> None:
        """Note when backward() has produced the gradients of the model's Gaussians (the end of the renderer's part)."""

        def reached(gradient):
            self._gradients_at = self.now()
            return gradient

        for tensor in (gaussians.means, gaussians.features, gaussians.scales, gaussians.quats, gaussians.opacities):
            if tensor.requires_grad:
                tensor.register_hook(reached)

    @contextmanager
    def backward(self):
        started = self._gradients_at = self.now()
        yield
        ended = self.now()
        split = min(max(self._gradients_at, started), ended)
        self.add("render_backward", split - started)
        self.add("model_backward", ended - split)

    def summary(self) -> dict:
        per_step = {name: self.totals.get(name, 0.0) / max(self.steps, 1) for name in PHASES}
        # the model forward ran inside predict_batch: what is left of it is the renderer's
        per_step["render_forward"] -= per_step["model_forward"]
        total = sum(per_step.values())
        return {
            "steps": self.steps,
            "step_seconds": total,
            "seconds": per_step,
            "share": {name: value / total if total else 0.0 for name, value in per_step.items()},
            "render_share": sum(per_step[name] for name in RENDER_PHASES) / total if total else 0.0,
        }


def step_phase(times: StepTimes | None, name: str):
    return times.phase(name) if times is not None else nullcontext()


def measuring_step_times(trainer: L.Trainer | None) -> StepTimes | None:
    """The step timer's times while it measures the current step (the module times its phases into them), else
    None. The module asks the trainer's callbacks; the timer never reaches into the module."""
    for callback in trainer.callbacks if trainer is not None else ():
        if isinstance(callback, StepTimer) and callback.measuring:
            return callback.times
    return None


class StepTimer(Callback):
    """Times every step after the first ``skip_steps`` (warm-up) and writes ``<output_dir>/step_times.json`` at the
    end of the fit. Put it last among the callbacks: its ``on_train_batch_end`` closes the step."""

    def __init__(self, enabled: bool = False, skip_steps: int = 5, output_dir: str = ".") -> None:
        self.enabled, self.skip_steps, self.output_dir = enabled, skip_steps, Path(output_dir)
        self.times: StepTimes | None = None
        self.measuring = False  # this step is timed (after the warm-up)
        self._ended_at: float | None = None
        self._seen = 0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.enabled:
            self.times = StepTimes()
            self.times.watch_model(module.model)

    def on_train_batch_start(self, trainer, module, batch, batch_idx: int) -> None:
        if self.times is None:
            return
        self.measuring = self._seen >= self.skip_steps
        self.times.active = self.measuring
        if self.measuring and self._ended_at is not None:
            self.times.add("data", time.perf_counter() - self._ended_at)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        if self.times is None:
            return
        now = time.perf_counter()
        if self.measuring and outputs:  # outputs["ended_at"]: when training_step returned
            self.times.add("callbacks", now - outputs["ended_at"])
            self.times.steps += 1
        self.measuring = self.times.active = False
        self._seen += 1
        self._ended_at = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.times is not None:  # a validation between two steps is not the next step's data wait
            self._ended_at = time.perf_counter()

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.times is None or not trainer.is_global_zero:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "step_times.json").write_text(json.dumps(self.times.summary(), indent=1))
