"""predict.py's throughput and its store's size: ``predict.frames_per_second`` and ``predict.bytes_per_frame``.

One in-process ``predict(cfg)`` over the first ``frames`` samples of a dataset (the generated rodent data by
default), with the default model at the data's size, the export of the kept Gaussians included (zarr store, per-frame
table; ``ply=True`` adds the .ply files). Frames/s is over the predict loop (reading, model, world transform,
encoding and writing); start-up (checkpoint, dataset scan, store creation) is reported apart. The stages are
predict()'s own timers; "reading" is the loop's time in none of them (waiting on the DataLoader's workers).

Without a checkpoint the default model's initial weights stand in: the speed is the same, but how many Gaussians
pass ``min_opacity`` (and so the bytes) depends on training: pass make train's last.ckpt for figures that mean
something (``python -m gslrm.bench --predict-ckpt ...``); ``kept_per_frame`` and ``bytes_per_gaussian`` are reported
either way.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

__all__ = ["job_predict", "initial_checkpoint", "table_lines", "SESSION_FRAMES", "SESSION_CAMERAS"]

SESSION_FRAMES = 18_000  # MAMMAL's markerless_mouse_1: the projected session
SESSION_CAMERAS = 6
ROOT = Path(__file__).resolve().parents[2]


def initial_checkpoint(path: Path, image_size: int, model: str | None = None) -> Path:
    """The default training config's model (``python train.py``, or ``model=<model>``) at its initial weights, saved
    as a checkpoint."""
    import torch

    from gslrm.config import build
    from gslrm.lit.module import GSLRMModule
    from gslrm.schemas import compose

    choice = [f"model={model}"] if model else []
    cfg = compose("config", [f"data.image_size={image_size}", "loss.perceptual.weight=0", *choice])
    module = GSLRMModule(
        model=build(cfg.model),
        loss=build(cfg.loss),
        optim=build(cfg.optim),
        render=build(cfg.render),
        num_input_views=cfg.data.num_input_views,
        val_lpips=False,
    )
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def job_predict(
    root: str,
    device: str,
    ckpt: str | None = None,
    image_size: int = 64,
    batch_size: int = 1,
    frames: int | None = None,
    ply: bool = False,
    num_workers: int = 2,
    data_overrides: tuple[str, ...] = (),
    model: str | None = None,
) -> dict:
    """predict.py over ``root`` (``split=all``, or its first ``frames``) into a scratch store. ``data_overrides``:
    the generator settings ``root`` was made with (``data.generator.samples=...``), or predict.py, finding another
    dataset's manifest there, generates the default one in its place. ``model``: a model config (``base``) whose
    initial weights stand in when no ``ckpt`` is given."""
    import sys

    import torch

    from gslrm.schemas import compose

    if str(ROOT) not in sys.path:  # predict.py is an entry point beside train.py, not a package module
        sys.path.insert(0, str(ROOT))
    from predict import predict

    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = ckpt or str(initial_checkpoint(Path(scratch) / "initial.ckpt", image_size, model))
        out = Path(scratch) / "store"
        cfg = compose(
            "predict",
            [
                f"ckpt_path={checkpoint}",
                f"data.root={root}",
                f"data.image_size={image_size}",
                *data_overrides,
                *([f"frames=0:{frames}"] if frames else []),
                f"predict.batch_size={batch_size}",
                f"predict.num_workers={num_workers}",
                f"predict.out={out}",
                f"predict.ply={str(ply).lower()}",
                f"paths.output_dir={Path(scratch) / 'run'}",
                f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
                "trainer.devices=1",
                "predict.progress_every_s=1000",
            ],
        )
        started = time.perf_counter()
        summary = predict(cfg)
        wall = time.perf_counter() - started
        from gslrm.session.store import SequenceStore

        store = SequenceStore(out)
        stored = store.bytes_on_disk()
        counts = store.group()["count"][:]
        done = int(summary["written"])
        seconds = summary["seconds"]
    loop = seconds["loop"]
    stages = {name: value for name, value in seconds.items() if name != "loop"}
    stages["reading"] = max(loop - sum(stages.values()), 0.0)
    kept = float(counts[counts >= 0].mean()) if (counts >= 0).any() else 0.0
    fps = done / loop
    initial = f"model={model}'s" if model else "the default model's"
    return {
        "checkpoint": ckpt or f"initial weights ({initial}; pass --predict-ckpt for a trained one)",
        "device": device,
        "threads": torch.get_num_threads(),
        "image_size": image_size,
        "batch_size": batch_size,
        "num_workers": num_workers,
        "frames": done,
        "frames_per_second": fps,
        "startup_seconds": wall - loop,
        "stage_seconds_per_frame": {name: value / done for name, value in stages.items()},
        "limiting_stage": max(stages, key=stages.get),
        "bytes_per_frame": stored / done,
        "kept_per_frame": kept,
        "bytes_per_gaussian": stored / max(kept * done, 1.0),
        "session_hours": SESSION_FRAMES / fps / 3600,
        "session_note": f"{SESSION_FRAMES} frames of {SESSION_CAMERAS} cameras: the model reads its input views only",
        "encoding": str(cfg.predict.encoding),
    }


def table_lines(m: dict) -> list[str]:
    stages = ", ".join(f"{name} {1000 * value:.0f} ms" for name, value in m["stage_seconds_per_frame"].items())
    return [
        "",
        f"predict.py ({m['checkpoint']}), {m['image_size']} px, batch {m['batch_size']}, {m['num_workers']} loader "
        f"workers, {m['frames']} frames, "
        f"{m['encoding']} store:",
        "",
        "| frames/s | per frame: stages | limiting | bytes/frame | kept/frame | bytes/Gaussian | 18,000 frames |",
        "|---|---|---|---|---|---|---|",
        f"| {m['frames_per_second']:.1f} | {stages} | {m['limiting_stage']} | {m['bytes_per_frame'] / 1e3:.1f} KB | "
        f"{m['kept_per_frame']:.0f} | {m['bytes_per_gaussian']:.1f} | {m['session_hours']:.2f} h |",
    ]
