"""``callbacks.viewer.enabled=true``: the browser viewer during training, showing the latest validation sample's
prediction and refreshed at each validation. Rank 0 only; off by default.

The training thread never waits for it: at the end of a validation it copies one sample's Gaussians and cameras to
the CPU (already computed by validation_step) and hands them to a worker thread through a one-slot queue, dropping
an older scene the browser has not been sent yet. The worker converts them and sends them over viser's websocket."""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

__all__ = ["LiveViewer"]


class LiveViewer(Callback):
    def __init__(
        self,
        enabled: bool = False,
        host: str = "127.0.0.1",
        port: int = 8080,
        max_splats: int = 300_000,
        min_opacity: float = 0.02,
        background: str = "white",
    ) -> None:
        self.enabled = enabled
        self.options = {
            "host": host,
            "port": port,
            "max_splats": max_splats,
            "min_opacity": min_opacity,
            "background": background,
        }
        self.viewer = None
        self.shown = 0  # scenes sent to the browser (tests, docs)
        self._latest = None
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._worker: threading.Thread | None = None

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        if not self.enabled or not trainer.is_global_zero or self.viewer is not None:
            return
        from gslrm.view.viewer import Viewer, ViewerConfig

        self.viewer = Viewer(ViewerConfig(**self.options)).start()
        self._worker = threading.Thread(target=self._send_scenes, name="gslrm-viewer", daemon=True)
        self._worker.start()
        log.info("live viewer: %s (the latest validation sample, refreshed at each validation)", self.viewer.url)

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        if self.viewer is not None and isinstance(outputs, dict) and "gaussians" in outputs:
            self._latest = (outputs["gaussians"], batch)  # references only: the copy happens once, at the end

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.viewer is None or self._latest is None or trainer.sanity_checking:
            return
        from gslrm.view.viewer import ViewScene

        gaussians, batch = self._latest
        self._latest = None
        name = f"step {trainer.global_step}: {self._sample_name(trainer, batch)}"
        cpu = {key: batch[key][0].detach().float().cpu() for key in ("c2w", "fxfycxcy", "image", "bg_color")}
        scene = ViewScene(
            name,
            gaussians[0],
            cpu["c2w"],
            cpu["fxfycxcy"],
            cpu["image"],
            module.num_input_views,
            module.render_config,
            cpu["bg_color"],
        )
        try:
            self._queue.get_nowait()  # an older scene not sent yet: the newer one replaces it
        except queue.Empty:
            pass
        self._queue.put_nowait(scene)

    @staticmethod
    def _sample_name(trainer: L.Trainer, batch: dict) -> str:
        try:
            index = int(batch["index"][0, 0, 1])
            return Path(trainer.datamodule.dataset("val").samples[index]).name
        except (AttributeError, KeyError, IndexError, TypeError):
            return "validation sample"

    def _send_scenes(self) -> None:
        while True:
            scene = self._queue.get()
            if scene is None:
                return
            try:
                self.viewer.show(scene)
                self.shown += 1
            except Exception:  # noqa: BLE001 - a viewer problem must never end the training
                log.warning("live viewer: could not show %s", scene.name, exc_info=True)

    def teardown(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.viewer is None:
            return
        self._queue.put(None)
        self._worker.join(timeout=30)
        self.viewer.stop()
        self.viewer = None
