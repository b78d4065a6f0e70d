"""Lightning's predict loop over a session: the frames a worker owns, the model on each, the writer that stores
chunks as they complete, progress lines, and SIGUSR2 (stop at the next batch, flush, requeue).

A worker is one process: shard ``predict.shard`` of ``predict.num_shards`` times rank ``r`` of a DDP world; it owns
every ``num_workers``-th chunk (``frames.chunks_of_worker``), so no two processes write one chunk and no
DistributedSampler (which pads with repeated samples) is involved.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from gslrm import slurm
from gslrm.data.dataset import DataConfig, ViewDataset
from gslrm.data.format import DataFormatError
from gslrm.model.gaussians import Gaussians, save_ply
from gslrm.model.gslrm import GSLRM
from gslrm.predict import predict_gaussians
from gslrm.session.config import FrameErrors, PredictConfig
from gslrm.session.frames import SessionFrame, chunks_of_worker
from gslrm.session.store import FrameResult, SequenceStore
from gslrm.session.world import to_world

log = logging.getLogger(__name__)

__all__ = ["Plan", "SequenceDataModule", "SequencePredictor", "SequenceWriter", "ProgressLog", "StopSignal"]


@dataclass
class Plan:
    """What this worker does: filled by :meth:`SequenceDataModule.setup`, once the rank is known."""

    frames: list[SessionFrame]
    frames_per_chunk: int
    shard: int = 0
    num_shards: int = 1
    todo: dict[int, list[int]] = field(default_factory=dict)  # chunk -> positions still to do, ascending
    worker: int = 0  # shard * world size + rank, of workers = shards * world size (set by assign)
    workers: int = 1

    def assign(self, store: SequenceStore, rank: int, world_size: int) -> None:
        done = store.done_positions()
        chunks = math.ceil(len(self.frames) / self.frames_per_chunk)
        worker, workers = self.shard * world_size + rank, self.num_shards * world_size
        self.worker, self.workers = worker, workers
        self.todo = {}
        for chunk in chunks_of_worker(chunks, worker, workers):
            start = chunk * self.frames_per_chunk
            positions = [p for p in range(start, min(start + self.frames_per_chunk, len(self.frames))) if p not in done]
            if positions:
                self.todo[chunk] = positions
        mine = sum(len(p) for p in self.todo.values())
        log.info(
            "worker %d of %d (shard %d, rank %d on %s): %d frames to do in %d chunks (%d of the session's %d done "
            "already)",
            *(worker, workers, self.shard, rank, socket.gethostname(), mine, len(self.todo), len(done)),
            len(self.frames),
        )

    @property
    def positions(self) -> list[int]:
        return [p for chunk in sorted(self.todo) for p in self.todo[chunk]]

    def chunk_of(self, position: int) -> int:
        return position // self.frames_per_chunk


class StopSignal:
    """SIGUSR2 under SLURM (preemption, or ``--signal=USR2@s`` before the time limit): noted in the handler, acted
    on between batches (the sampler stops handing out frames; what was read is still predicted and written)."""

    def __init__(self) -> None:
        self.received_at: float | None = None
        self._pid: int | None = None

    def arm(self) -> None:
        if slurm.job_id() is None or self._pid is not None:
            return
        self._pid = os.getpid()
        signal.signal(signal.SIGUSR2, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if os.getpid() == self._pid and self.received_at is None:  # DataLoader workers inherit the handler
            self.received_at = time.time()

    @property
    def requested(self) -> bool:
        return self.received_at is not None


class _StoppableSampler(Sampler[int]):
    def __init__(self, count: int, stop: StopSignal) -> None:
        self.count, self.stop = count, stop

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[int]:
        for index in range(self.count):
            if self.stop.requested:
                log.warning("SIGUSR2 received: no new frames; flushing what is under way")
                return
            yield index


class _FrameDataset(Dataset):
    """The plan's frames as samples; a frame that cannot be read becomes ``{"position", "error"}`` so that the
    main process decides (skip and count, or stop with the loader's one line)."""

    def __init__(self, config: DataConfig, plan: Plan) -> None:
        self.views = ViewDataset(config, "predict", samples=[frame.sample for frame in plan.frames])
        self.views.with_world_frame = True
        self.views.inputs_only = True
        self.positions = plan.positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int) -> dict:
        position = self.positions[index]
        try:
            sample = self.views.load(position)
        except DataFormatError as error:
            return {"position": position, "error": str(error)}
        sample.pop("names", None)
        return dict(sample, position=position)


def _collate(samples: list[dict]) -> dict:
    errors = [(s["position"], s["error"]) for s in samples if "error" in s]
    good = [s for s in samples if "error" not in s]
    return {"errors": errors, "views": default_collate(good) if good else None}


class SequenceDataModule(L.LightningDataModule):
    def __init__(self, data_config: DataConfig, plan: Plan, store: SequenceStore, config: PredictConfig) -> None:
        super().__init__()
        self.data_config, self.plan, self.store, self.config = data_config, plan, store, config
        self.stop = StopSignal()

    def setup(self, stage: str) -> None:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        self.plan.assign(self.store, rank, world)

    def predict_dataloader(self) -> DataLoader:
        self.stop.arm()  # before the workers fork
        dataset = _FrameDataset(self.data_config, self.plan)
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size,
            sampler=_StoppableSampler(len(dataset), self.stop),
            num_workers=self.config.num_workers,
            collate_fn=_collate,
        )


class SequencePredictor(L.LightningModule):
    """The model on each frame's inputs; the Gaussians above ``min_opacity`` go back to the rig's frame."""

    def __init__(self, model: GSLRM, num_input_views: int, config: PredictConfig) -> None:
        super().__init__()
        self.model = model
        self.num_input_views = num_input_views
        self.config = config
        self.seconds = {"model": 0.0, "to_world": 0.0}  # where a frame's time goes (the bench's stage figures)
        # A rank whose chunks are all stored (a resumed attempt, more ranks than chunks) has an empty loader. Lightning
        # raises on that rank by default, and the other ranks then lose their peer in the next collective.
        self.allow_zero_length_dataloader_with_multiple_devices = True

    def predict_step(self, batch: dict, batch_idx: int) -> list[FrameResult]:
        results = []
        for position, error in batch["errors"]:
            if self.config.on_error == FrameErrors.fail:
                raise DataFormatError(error)
            log.warning("frame %d skipped (predict.on_error=skip): %s", position, error)
            results.append(FrameResult.skipped(position, error))
        views = batch["views"]
        if views is not None:
            started = time.perf_counter()
            gaussians = predict_gaussians(self.model, views, self.num_input_views).gaussians.float()
            if gaussians.means.is_cuda:
                torch.cuda.synchronize()
            converted = time.perf_counter()
            for b, position in enumerate(views["position"].tolist()):
                results.append(self.to_result(position, gaussians[b], views["world_from_normalized"][b]))
            self.seconds["model"] += converted - started
            self.seconds["to_world"] += time.perf_counter() - converted
        return sorted(results, key=lambda r: r.position)

    def to_result(self, position: int, gaussians: Gaussians, matrix: torch.Tensor) -> FrameResult:
        keep = gaussians.opacities[0] > self.config.min_opacity
        kept = gaussians.map(lambda t: t[:, keep].detach().cpu().double())
        matrix = matrix.detach().cpu().double().numpy()
        means, scales, quats = to_world(matrix, kept.means[0].numpy(), kept.scales[0].numpy(), kept.quats[0].numpy())
        return FrameResult(position, matrix, means, scales, quats, kept.opacities[0].numpy(), kept.colors[0].numpy())


class SequenceWriter(BasePredictionWriter):
    """Buffers each chunk's frames and stores the chunk when its last frame of this run is predicted; whatever is
    buffered when the loop ends (a stop signal) is stored too, so a rerun redoes only what was never predicted."""

    def __init__(self, store: SequenceStore, plan: Plan, ply_dir: Path | None = None) -> None:
        super().__init__(write_interval="batch")
        self.store, self.plan, self.ply_dir = store, plan, ply_dir
        self.buffers: dict[int, list[FrameResult]] = {}
        self.written = 0
        self.skipped = 0
        self.seconds = {"store": 0.0, "ply": 0.0}

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        for result in prediction:
            chunk = self.plan.chunk_of(result.position)
            self.buffers.setdefault(chunk, []).append(result)
            if self.ply_dir is not None and result.error is None:
                self.write_ply(result)
            if len(self.buffers[chunk]) == len(self.plan.todo[chunk]):
                self.flush(chunk)

    def flush(self, chunk: int) -> None:
        results = self.buffers.pop(chunk)
        started = time.perf_counter()
        self.store.write_chunk(chunk, results, self.plan.frames)
        self.seconds["store"] += time.perf_counter() - started
        self.written += len(results)
        self.skipped += sum(result.error is not None for result in results)

    def on_predict_end(self, trainer, pl_module) -> None:
        for chunk in sorted(self.buffers):
            self.flush(chunk)

    def write_ply(self, result: FrameResult) -> None:
        started = time.perf_counter()
        frame = self.plan.frames[result.position]
        self.ply_dir.mkdir(parents=True, exist_ok=True)
        path = self.ply_dir / f"frame_{frame.source_frame:06d}.ply"
        partial = path.with_name(f".{path.name}.partial")
        tensor = lambda array: torch.from_numpy(np.ascontiguousarray(array, np.float32))[None]  # noqa: E731
        gaussians = Gaussians.from_colors(
            *(tensor(getattr(result, name)) for name in ("means", "scales", "rotations", "opacities", "colors"))
        )
        save_ply(partial, gaussians)
        os.replace(partial, path)
        self.seconds["ply"] += time.perf_counter() - started


class ProgressLog(Callback):
    """One line every ``every_s`` seconds: frames done of this worker's, frames/s, the time left."""

    def __init__(self, plan: Plan, every_s: float = 10.0) -> None:
        self.plan, self.every_s = plan, every_s
        self.done, self.total = 0, 0
        self.started = self.last = self.elapsed = 0.0

    def on_predict_start(self, trainer, pl_module) -> None:
        self.total = len(self.plan.positions)
        self.started = self.last = time.perf_counter()

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.done += len(outputs)
        now = time.perf_counter()
        if now - self.last >= self.every_s:
            self.last = now
            log.info("%s", self.line(now))

    def line(self, now: float) -> str:
        rate = self.done / max(now - self.started, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else math.inf
        return (
            f"predict: {self.done}/{self.total} frames ({self.done / max(self.total, 1):.0%}), "
            f"{rate:.2f} frames/s, {_duration(left)} left"
        )

    def on_predict_end(self, trainer, pl_module) -> None:
        elapsed = self.elapsed = time.perf_counter() - self.started
        log.info(
            "predict: worker %d of %d: %d frames in %s (%.2f frames/s)",
            *(self.plan.worker, self.plan.workers, self.done, _duration(elapsed), self.rate(elapsed)),
        )

    def rate(self, elapsed: float) -> float:
        return self.done / elapsed if elapsed > 0 else 0.0


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "unknown"
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"
