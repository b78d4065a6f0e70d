"""python -m gslrm.view ckpt_path=FILE|last [split=val] [sample=NAME] [port=8080] | ply=PATH | sequence=DIR — a browser
viewer.

python -m gslrm.view ckpt_path=last                       # the newest training run, first val sample, :8080
python -m gslrm.view ckpt_path=last sample=sample_000512 viewer.background=black
python -m gslrm.view ply=outputs/eval/runs/<time>/samples/<sample>/gaussians.ply
python -m gslrm.view sequence=outputs/predict/sequences/<hash>_all   # predict.py's store: a time slider, play
ssh -L 8080:localhost:8080 cluster-node                   # then open http://localhost:8080 here
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

STARTED = time.perf_counter()  # "ready in N s" counts from here: imports, checkpoint, data, forward pass, server

os.environ.setdefault("GSLRM_ROOT", str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("MUJOCO_GL", "osmesa")

import hydra  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from gslrm.schemas import register_configs  # noqa: E402

register_configs()
log = logging.getLogger("gslrm.view")


def build_viewer(cfg: DictConfig):
    """The started viewer for ``cfg`` (conf/view.yaml): a checkpoint's predictions on a split, or a ``.ply``."""
    from gslrm.config import build
    from gslrm.data.datamodule import collate_views
    from gslrm.inference import find_sample, load_for_inference
    from gslrm.model.gaussians import load_ply
    from gslrm.predict import predict_gaussians
    from gslrm.view.viewer import Viewer, ViewScene

    config = build(cfg.viewer)
    if cfg.get("sequence") is not None:
        from gslrm.view.sequence import SequenceSource

        source = SequenceSource(cfg.sequence)
        viewer = Viewer(config, timeline=source.timeline(cfg.get("fps"))).start()
        viewer.seek(0)
        return viewer
    if cfg.ply is not None:
        if not Path(cfg.ply).is_file():
            raise FileNotFoundError(f"ply: {cfg.ply}: file not found")
        viewer = Viewer(config).start()
        viewer.show(ViewScene(Path(cfg.ply).name, load_ply(cfg.ply)))
        return viewer
    if cfg.ckpt_path is None:
        raise FileNotFoundError(
            "nothing to show: pass ckpt_path=FILE|last (a checkpoint), ply=PATH or sequence=DIR (predict.py's store)"
        )
    loaded = load_for_inference(cfg)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = loaded.model.to(device)
    dataset = loaded.dataset(cfg.split)
    names = [sample.name for sample in dataset.samples]
    first = names[find_sample(dataset, cfg.sample)] if cfg.sample is not None else names[0]
    inputs = loaded.num_input_views

    @torch.no_grad()
    def load_sample(name: str) -> ViewScene:
        started = time.perf_counter()
        batch = collate_views([dataset[names.index(name)]])
        if batch is None or "image" not in batch:
            raise ValueError(f"sample {name} could not be read (see the warning above)")
        batch = {key: batch[key].to(device) for key in ("image", "c2w", "fxfycxcy", "bg_color")}
        output = predict_gaussians(model, batch, inputs)
        seconds = time.perf_counter() - started
        log.info("%s: predicted %d Gaussians in %.2f s", name, output.gaussians.means.shape[1], seconds)
        cpu = {key: value[0].float().cpu() for key, value in batch.items()}
        return ViewScene(
            name,
            output.gaussians,
            cpu["c2w"],
            cpu["fxfycxcy"],
            cpu["image"],
            inputs,
            loaded.render_config,
            cpu["bg_color"],
        )

    viewer = Viewer(config, names, load_sample).start()
    viewer.sample_picker.value = first  # runs the model on it (the dropdown's callback)
    if viewer.scene is None:
        viewer.show(load_sample(first))
    return viewer


@hydra.main(version_base="1.3", config_path="../../conf", config_name="view")
def hydra_main(cfg: DictConfig) -> None:
    from gslrm.runs import one_line_errors

    with one_line_errors(ValueError):
        viewer = build_viewer(cfg)
    log.info("serving %s, ready in %.1f s (Ctrl-C stops)", viewer.url, time.perf_counter() - STARTED)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        viewer.stop()


if __name__ == "__main__":
    hydra_main()
