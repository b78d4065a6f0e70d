"""The browser viewer: a viser server showing one predicted sample's Gaussians, the rig's cameras with their input
images, and a GUI (sample, opacity threshold, background, cameras, "render this view").

The viewer holds a :class:`ViewScene` and draws it; where scenes come from is the caller's business (a checkpoint and a
dataset in ``python -m gslrm.view``, a ``.ply``, the validation of a running training)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from gslrm.data.dataset import BACKGROUNDS
from gslrm.evaluate import VisualBackground
from gslrm.losses.backgrounds import recomposite
from gslrm.model.gaussians import Gaussians
from gslrm.render import RenderConfig, render
from gslrm.view import splats as conversions
from gslrm.view.splats import Splats, to_splats

log = logging.getLogger(__name__)

__all__ = ["ViewerConfig", "ViewScene", "Viewer", "Timeline"]


@dataclass
class ViewerConfig:
    host: str = "127.0.0.1"  # 0.0.0.0 to reach it from another machine (or forward the port over ssh)
    port: int = 8080
    min_opacity: float = 0.02  # the threshold slider's start (FaceLift's export filter)
    max_splats: int = 300_000  # the most opaque ones are sent; a FaceLift-size prediction has ~1M (docs/viewer.md)
    background: VisualBackground = VisualBackground.white
    show_cameras: bool = True
    overview_distance: float = 2.0  # the first view: input camera 0's direction, this many times farther out
    render_height: int = 256  # "render this view": our renderer's image height

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_opacity < 1.0:
            raise ValueError(f"min_opacity: expected a value in [0, 1), not {self.min_opacity}")
        if self.max_splats < 1:
            raise ValueError(f"max_splats: expected at least 1, not {self.max_splats}")


@dataclass
class ViewScene:
    """One sample to show: its Gaussians (a one-sample batch) and, when known, the rig cameras and their images
    (RGBA on the data's background; the first ``num_inputs`` are the model's inputs)."""

    name: str
    gaussians: Gaussians
    c2w: Tensor | None = None  # [v, 4, 4]
    fxfycxcy: Tensor | None = None  # [v, 4]
    images: Tensor | None = None  # [v, 4, h, w], RGB on data_background
    num_inputs: int = 0
    render_config: RenderConfig = field(default_factory=RenderConfig)
    data_background: Tensor = field(default_factory=lambda: torch.ones(3))  # the batch's bg_color

    def __post_init__(self) -> None:
        self.gaussians = self.gaussians.detach().float().map(lambda t: t[:1].cpu())


@dataclass
class Timeline:
    """A sequence to play: ``count`` frames, ``load(i)`` reads frame i when it is shown (never all at once, so
    memory stays flat over thousands of frames), ``label(i)`` names it (source frame and time)."""

    count: int
    load: Callable[[int], ViewScene]
    fps: float = 25.0
    label: Callable[[int], str] = str


class Viewer:
    """``Viewer(config, samples, load_sample).start()``: serves http://host:port. ``samples``/``load_sample`` fill
    the sample picker (``load_sample(name) -> ViewScene`` runs the model); without them the picker is hidden. With a
    ``timeline``: a frame slider, play/pause and the playback rate instead (``python -m gslrm.view sequence=...``)."""

    def __init__(
        self,
        config: ViewerConfig,
        samples: list[str] | None = None,
        load_sample: Callable[[str], ViewScene] | None = None,
        timeline: Timeline | None = None,
    ) -> None:
        self.config = config
        self.samples, self.load_sample = samples or [], load_sample
        self.timeline = timeline
        self.frame: int | None = None  # the timeline's frame shown
        self.scene: ViewScene | None = None
        self.splats: Splats | None = None
        self.server = None
        self._splat_handle = None  # viser's scene nodes, replaced as the sample or the threshold changes
        self._camera_handles: list = []
        self._lock = threading.RLock()  # GUI callbacks run on viser's threads; show() on the caller's

    # -- server and GUI --------------------------------------------------------------------------------------
    def start(self) -> Viewer:
        import viser

        self.server = viser.ViserServer(host=self.config.host, port=self.config.port, verbose=False)
        gui = self.server.gui
        gui.configure_theme(control_width="medium", show_logo=False)
        self.status = gui.add_markdown("loading...")
        if self.samples and self.load_sample is not None:
            self.sample_picker = gui.add_dropdown("sample", tuple(self.samples), initial_value=self.samples[0])
            self.sample_picker.on_update(lambda _: self._pick(self.sample_picker.value))
        if self.timeline is not None:
            self._add_timeline(gui)
        self.threshold = gui.add_slider(
            "opacity >", min=0.0, max=0.99, step=0.01, initial_value=self.config.min_opacity
        )
        self.threshold.on_update(lambda _: self.redraw())
        self.background = gui.add_dropdown(
            "background", tuple(VisualBackground), initial_value=str(self.config.background)
        )
        self.background.on_update(lambda _: self._draw_background())
        self.cameras = gui.add_checkbox("rig cameras", initial_value=self.config.show_cameras)
        self.cameras.on_update(lambda _: self._draw_cameras())
        # a short label: the GUI panel is narrow and cut the longer one off at 1280 px; the hint says the rest
        self.render_button = gui.add_button(
            "render this view", hint="gslrm's own renderer from this camera, beside the nearest rig camera's image"
        )
        self.render_button.on_click(lambda event: self.render_view(event.client))
        self.render_image = gui.add_image(np.ones((8, 16, 3), np.uint8) * 255, label="render | ground truth")
        self._draw_background()
        log.info("viewer at http://%s:%d", self.config.host, self.server.get_port())
        return self

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "") else self.config.host
        return f"http://{host}:{self.server.get_port()}"

    def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None  # the player thread stops when it sees None
            server.stop()

    # -- a sequence ------------------------------------------------------------------------------------------
    def _add_timeline(self, gui) -> None:
        last = max(self.timeline.count - 1, 1)  # a slider needs max > min; a 1-frame sequence clamps in seek()
        self.frame_slider = gui.add_slider("frame", min=0, max=last, step=1, initial_value=0)
        self.frame_slider.on_update(lambda _: self.seek(int(self.frame_slider.value)))
        self.play = gui.add_checkbox("play", initial_value=False)
        self.fps = gui.add_number("fps", initial_value=float(self.timeline.fps), min=0.1, max=240.0, step=0.1)
        threading.Thread(target=self._player, name="gslrm-viewer-player", daemon=True).start()

    def seek(self, frame: int) -> None:
        """Show frame ``frame`` of the timeline (read now); the camera stays where the user put it."""
        frame = min(max(frame, 0), self.timeline.count - 1)
        with self._lock:
            if frame == self.frame and self.scene is not None:
                return
            scene = self.timeline.load(frame)
            self.frame = frame
            self.show(scene, place_camera=self.scene is None)
            self.status.content += f" · {self.timeline.label(frame)}"

    def _player(self) -> None:
        """While "play" is ticked: the next frame every 1/fps seconds (or as fast as frames load), looping."""
        import time

        while self.server is not None:
            started = time.perf_counter()
            if self.play.value and self.timeline.count > 1:
                self.frame_slider.value = ((self.frame or 0) + 1) % self.timeline.count  # runs seek()
            time.sleep(max(0.0, 1.0 / max(float(self.fps.value), 0.1) - (time.perf_counter() - started)))

    # -- what is shown ---------------------------------------------------------------------------------------
    def show(self, scene: ViewScene, place_camera: bool = True) -> None:
        """Replace the shown sample (thread-safe; the training callback calls it from its own thread)."""
        with self._lock:
            self.scene = scene
            if scene.c2w is not None and place_camera:
                self._place_camera(scene)
            self.redraw()
            self._draw_cameras()

    def set_threshold(self, value: float) -> None:
        self.threshold.value = value  # viser runs the slider's on_update (the redraw) synchronously

    def redraw(self) -> None:
        with self._lock:
            if self.scene is None or self.server is None:
                return
            splats = to_splats(self.scene.gaussians, float(self.threshold.value), self.config.max_splats)
            self.splats = splats
            if len(splats) == 0:
                if self._splat_handle is not None:
                    self._splat_handle.remove()
                    self._splat_handle = None
            else:
                self._splat_handle = self.server.scene.add_gaussian_splats(
                    "/splats",
                    centers=splats.centers,
                    covariances=splats.covariances,
                    rgbs=splats.rgbs,
                    opacities=splats.opacities,
                )
            subsampled = " (the most opaque; viewer.max_splats)" if len(splats) == self.config.max_splats else ""
            self.status.content = (
                f"**{self.scene.name}**: {len(splats):,} of {splats.total:,} Gaussians shown, "
                f"opacity > {float(self.threshold.value):.2f}{subsampled}"
            )

    def _pick(self, name: str) -> None:
        self.status.content = f"running the model on **{name}**..."
        self.show(self.load_sample(name))

    def _place_camera(self, scene: ViewScene) -> None:
        """Up = the rig's up; the first view (and "reset view") looks at the rig's centre from input camera 0's
        direction, farther out, so the whole prediction and some room around it are in view."""
        centre = np.zeros(3)  # the rig is normalized around its centre (gslrm.rig)
        up = conversions.scene_up(scene.c2w)
        position = conversions.overview_position(scene.c2w[0], centre, up, self.config.overview_distance)
        fov = float(2 * np.arctan(0.5 * scene.images.shape[-2] / float(scene.fxfycxcy[0, 1])))
        self.server.scene.set_up_direction(tuple(up))
        initial = self.server.initial_camera
        initial.position, initial.look_at, initial.up = tuple(position), tuple(centre), tuple(up)
        initial.fov = fov
        for client in self.server.get_clients().values():
            client.camera.up_direction = up
            client.camera.position = position
            client.camera.look_at = centre
            client.camera.fov = fov

    def _draw_background(self) -> None:
        colour = np.array(BACKGROUNDS[self.background.value]) * 255
        self.server.scene.set_background_image(np.broadcast_to(colour.astype(np.uint8), (4, 4, 3)).copy(), "png")

    def _draw_cameras(self) -> None:
        with self._lock:
            scene = self.scene
            for handle in self._camera_handles:
                handle.remove()
            self._camera_handles = []
            if scene is None or scene.c2w is None or not self.cameras.value:
                return
            height, width = scene.images.shape[-2:]
            scale = 0.06 * float(scene.c2w[:, :3, 3].norm(dim=-1).mean())
            for view in range(scene.c2w.shape[0]):
                fy = float(scene.fxfycxcy[view, 1])
                image = scene.images[view, :3].permute(1, 2, 0).clamp(0, 1).mul(255).byte().numpy()
                is_input = view < scene.num_inputs
                rotation = conversions.matrix_to_quat(scene.c2w[view, :3, :3].numpy())
                self._camera_handles.append(
                    self.server.scene.add_camera_frustum(
                        f"/cameras/{view}",
                        fov=float(2 * np.arctan(0.5 * height / fy)),
                        aspect=width / height,
                        scale=scale,
                        image=image,
                        color=(40, 160, 40) if is_input else (160, 160, 160),
                        wxyz=rotation,
                        position=scene.c2w[view, :3, 3].numpy(),
                    )
                )

    # -- "render this view" ----------------------------------------------------------------------------------
    def render_view(self, client) -> dict:
        """Our renderer from the client's current camera, beside the ground truth of the nearest rig camera (also
        rendered from that camera, for a like-for-like look); shown in the GUI and returned."""
        with self._lock:
            scene = self.scene
            camera = client.camera
            height = self.config.render_height
            width = max(1, round(height * camera.image_width / max(camera.image_height, 1)))
            c2w, intrinsics = conversions.camera_to_opencv(camera.wxyz, camera.position, camera.fov, width, height)
            background = torch.tensor(BACKGROUNDS[self.background.value])
            kept = self._kept_gaussians()
            view = render(
                kept,
                c2w[None, None],
                intrinsics[None, None],
                width,
                height,
                background=background[None],
                settings=scene.render_config,
                deferred=False,
            )
            result = {"render": view.rgb[0, 0].clamp(0, 1), "alpha": view.alpha[0, 0], "nearest": None}
            panels = [result["render"]]
            if scene.c2w is not None:
                nearest = conversions.nearest_camera(c2w, scene.c2w)
                gt = scene.images[nearest]
                gt_height, gt_width = gt.shape[-2:]
                rig = render(
                    kept,
                    scene.c2w[nearest][None, None],
                    scene.fxfycxcy[nearest][None, None],
                    gt_width,
                    gt_height,
                    background=background[None],
                    settings=scene.render_config,
                    deferred=False,
                )
                # moved from the data's background onto the viewer's through its alpha, as eval.py's panels
                gt_rgb = recomposite(gt[None, None], scene.data_background[None], background[None])[0, 0, :3]
                result |= {"nearest": nearest, "ground_truth": gt_rgb, "rig_render": rig.rgb[0, 0].clamp(0, 1)}
                scale = height / gt.shape[-2]
                for image in (rig.rgb[0, 0].clamp(0, 1), gt_rgb):
                    panels.append(torch.nn.functional.interpolate(image[None], scale_factor=scale, mode="nearest")[0])
            strip = torch.cat([p[:, :height] for p in panels], dim=-1)
            self.render_image.image = strip.permute(1, 2, 0).mul(255).byte().numpy()
            return result

    def _kept_gaussians(self) -> Gaussians:
        g = self.scene.gaussians
        keep = g.opacities[0] > float(self.threshold.value)
        return g.map(lambda t: t[:, keep])
