"""The default dataset: DeepMind's virtual rodent (dm-control, Apache-2.0) posed at random and photographed by a
fixed, uneven 6-camera rig shaped like the real mouse rig, rendered with MuJoCo.

    python -m gslrm.data.rodent --out DIR --samples N --seed S

Units: one world unit is ``BODY_LENGTH_M`` metres (nose to tail base), so cameras 2.0-3.4 units away see the body
as a real rig sees a ~10 cm mouse from 25-40 cm. Raw images are 288x256 RGBA on white with the exact mask as alpha
(what a recording imported with masks has), exact OpenCV calibration and per-view z-depth (``depth/cam_XXX.npy``,
units, 0 = background).
The rig is centred off the origin and its mean distance is not 2.7, so the default path exercises normalization.

Every val sample also gets held-out orbit views (``orbit/opencv_cameras.json``, ``orbit/images/orbit_XXX.png``):
8 azimuths between the rig's cameras at 2 elevations, around the rig centre at the rig's mean distance. They are
never inputs and never supervised; eval.py renders the predicted Gaussians into them (``*_orbit`` metrics) to
measure the 3D away from the rig's six viewpoints.

With ``supervision_views`` = K, every train sample also gets K views from random viewpoints around the animal
(``supervision/opencv_cameras.json``, images and depth under ``supervision/``): never inputs, supervised only where
``data.supervision_views`` draws them, as GS-LRM supervises renders from random views of each Objaverse object. The
rig's own cameras stay the inputs; the val samples never get them.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gslrm.data.format import ORBIT_DIR, SUPERVISION_DIR, Frame, write_cameras

log = logging.getLogger(__name__)

__all__ = ["RodentConfig", "RIG", "ensure_dataset", "generate", "generator_overrides", "rig_cameras", "orbit_cameras"]

GENERATOR_VERSION = 3  # 2: held-out orbit views of the val samples; 3: RGBA images with the exact mask as alpha
BODY_LENGTH_M = 0.17  # skull origin to tail base is 0.146 m in the rest pose; the snout adds ~0.025 m
WIDTH, HEIGHT = 288, 256
FOVY_DEG = 34.7  # fy = 128 / tan(17.35 deg) = 409.9 px, as the real rig's fy ~ 409.8
RIG_CENTER = np.array([0.35, -0.2, 0.12])  # units; off the origin on purpose
# (distance [units], elevation [deg], azimuth [deg]) per camera: uneven like the real rig
RIG = (
    (2.05, -28.0, 15.0),
    (2.45, 8.0, 83.0),
    (3.35, 17.0, 141.0),
    (2.80, 38.0, 208.0),
    (2.20, 62.0, 257.0),
    (3.10, 74.0, 322.0),
)
# held-out orbit views of val samples: azimuths 22.5 + 45 k deg (between and beside the rig's), two elevations
ORBIT_AZIMUTHS_DEG = tuple(22.5 + 45.0 * k for k in range(8))
ORBIT_ELEVATIONS_DEG = (15.0, 45.0)
ORBIT_DISTANCE = 2.7  # units: about the rig's mean camera distance (2.66)
# supervision views of train samples: anywhere in the rig's range of distances and elevations (uniform in azimuth
# and in sin(elevation), i.e. uniform on that band of the sphere), aimed near the rig centre
SUPERVISION_DISTANCE = (2.0, 3.4)
SUPERVISION_ELEVATION_DEG = (-30.0, 78.0)
SUPERVISION_AIM = 0.1  # units of aim jitter around the rig centre
# body colours (RGB in [0,1]): white, black and agouti/brown tones
COATS = ((0.86, 0.85, 0.82), (0.13, 0.12, 0.11), (0.42, 0.32, 0.22), (0.58, 0.47, 0.34), (0.5, 0.5, 0.52))


@dataclass
class RodentConfig:
    samples: int = 72
    val_samples: int = 8
    seed: int = 0
    joint_spread: float = 0.7  # fraction of each joint's range sampled (centred)
    offset: float = 0.1  # max body offset from the rig centre, units
    # per-sample rig jitter of the train samples (val samples keep the fixed rig, so eval stays comparable): at 1.0
    # each camera moves by up to +-10 % in distance, +-8 deg in elevation and azimuth, +-0.05 units of aim and +-3 deg
    # of roll, drawn anew for every sample (rig_jitter_cameras); 0 is the fixed rig of every sample
    rig_jitter: float = 0.0
    # views from random viewpoints rendered for every train sample (supervision_cameras): supervision targets that
    # data.supervision_views draws from; 0: none
    supervision_views: int = 0
    # train samples written after the val samples, their poses from a stream of their own: the first ``samples``
    # (val included) are the same with or without them, so a larger training set is scored on the same val samples
    extra_train_samples: int = 0

    def __post_init__(self) -> None:
        if self.extra_train_samples < 0:
            raise ValueError(f"data.generator.extra_train_samples: expected >= 0, not {self.extra_train_samples}")


RODENT_EXTRA = "pip install -e '.[rodent]' (make install does)"


def _asset_path() -> Path:
    """dm-control's rodent model. dm-control is an extra (``rodent``), installed only to generate the default data:
    it pins its own MuJoCo and is not needed to train on a lab's data."""
    import importlib.util

    for package in ("dm_control", "mujoco"):
        if importlib.util.find_spec(package) is None:
            raise FileNotFoundError(
                f"{package} is not installed: the rodent dataset is rendered with MuJoCo from dm-control's rodent "
                f"model; {RODENT_EXTRA}"
            )
    spec = importlib.util.find_spec("dm_control")
    path = Path(spec.origin).parent / "locomotion" / "walkers" / "assets" / "rodent.xml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the dm-control rodent model is missing; {RODENT_EXTRA}")
    return path


def _look_at(position: np.ndarray, target: np.ndarray, roll_rad: float = 0.0) -> np.ndarray:
    """OpenCV c2w (x right, y down, z forward) at ``position`` looking at ``target``, Z-up world, rolled."""
    forward = (target - position) / np.linalg.norm(target - position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    right, up = (
        math.cos(roll_rad) * right + math.sin(roll_rad) * up,
        -math.sin(roll_rad) * right + math.cos(roll_rad) * up,
    )
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, -up, forward, position
    return c2w


def _on_sphere(distance: float, elevation_deg: float, azimuth_deg: float) -> np.ndarray:
    el, az = math.radians(elevation_deg), math.radians(azimuth_deg)
    return RIG_CENTER + distance * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])


def _intrinsics(count: int, width: int, height: int) -> np.ndarray:
    focal = (height / 2.0) / math.tan(math.radians(FOVY_DEG) / 2.0)  # MuJoCo: square pixels, centred principal point
    return np.tile([focal, focal, width / 2.0, height / 2.0], (count, 1))


def _rig_aims() -> list[tuple[np.ndarray, float]]:
    """Each rig camera's aim point (units) and roll (rad): the rig centre and 0, with a fixed jitter (seed 1234)."""
    jitter = np.random.default_rng(1234)
    return [(RIG_CENTER + jitter.uniform(-0.04, 0.04, 3), math.radians(jitter.uniform(-3.0, 3.0))) for _ in RIG]


def rig_cameras(width: int = WIDTH, height: int = HEIGHT) -> tuple[np.ndarray, np.ndarray]:
    """The fixed rig: OpenCV ``c2w [6,4,4]`` (units, Z-up) and ``fxfycxcy [6,4]`` of ``width x height`` images
    (the real rig's 288x256 by default; same field of view at any size).

    Aim points and rolls carry a small fixed jitter (seed 1234), as hand-mounted cameras do, so the optical axes
    do not meet in one point (the normalization reports their RMS residual).
    """
    c2ws = [
        _look_at(_on_sphere(distance, elevation, azimuth), target, roll)
        for (distance, elevation, azimuth), (target, roll) in zip(RIG, _rig_aims(), strict=True)
    ]
    return np.stack(c2ws), _intrinsics(len(RIG), width, height)


def supervision_cameras(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` random viewpoints (OpenCV ``c2w [count,4,4]``, units, the rig's intrinsics): uniform over the band
    of the sphere between ``SUPERVISION_ELEVATION_DEG`` at a distance in ``SUPERVISION_DISTANCE``, each aimed within
    ``SUPERVISION_AIM`` of the rig centre."""
    low, high = (math.sin(math.radians(e)) for e in SUPERVISION_ELEVATION_DEG)
    c2ws = []
    for _ in range(count):
        elevation = math.degrees(math.asin(rng.uniform(low, high)))
        azimuth = rng.uniform(0.0, 360.0)
        distance = rng.uniform(*SUPERVISION_DISTANCE)
        target = RIG_CENTER + rng.uniform(-SUPERVISION_AIM, SUPERVISION_AIM, 3)
        c2ws.append(_look_at(_on_sphere(distance, elevation, azimuth), target))
    return np.stack(c2ws).reshape(count, 4, 4)


RIG_JITTER = {"distance": 0.10, "angle_deg": 8.0, "aim": 0.05, "roll_deg": 3.0}  # at rig_jitter = 1.0


def rig_jitter_cameras(rng: np.random.Generator, scale: float) -> np.ndarray:
    """The rig with every camera moved at random (``RIG_JITTER`` times ``scale``): OpenCV ``c2w [6,4,4]``.

    A model trained on one fixed rig can learn its six viewpoints instead of reading the cameras; a lab's rig is
    moved and recalibrated between sessions, and no two labs' rigs are the same. Intrinsics stay the rig's.
    """
    c2ws = []
    for (distance, elevation, azimuth), (target, roll) in zip(RIG, _rig_aims(), strict=True):
        u = rng.uniform(-1.0, 1.0, 7) * scale
        position = _on_sphere(
            distance * (1.0 + RIG_JITTER["distance"] * u[0]),
            elevation + RIG_JITTER["angle_deg"] * u[1],
            azimuth + RIG_JITTER["angle_deg"] * u[2],
        )
        c2ws.append(
            _look_at(position, target + RIG_JITTER["aim"] * u[3:6], roll + math.radians(RIG_JITTER["roll_deg"] * u[6]))
        )
    return np.stack(c2ws)


def orbit_cameras(width: int = WIDTH, height: int = HEIGHT) -> tuple[np.ndarray, np.ndarray]:
    """The held-out orbit: ``c2w [16,4,4]`` (elevation-major) looking at the rig centre, the rig's intrinsics."""
    c2ws = [
        _look_at(_on_sphere(ORBIT_DISTANCE, elevation, azimuth), RIG_CENTER)
        for elevation in ORBIT_ELEVATIONS_DEG
        for azimuth in ORBIT_AZIMUTHS_DEG
    ]
    return np.stack(c2ws), _intrinsics(len(c2ws), width, height)


class RodentScene:
    """The MuJoCo model (rodent with a free root, white sky, rig cameras) and an offscreen renderer."""

    def __init__(
        self, width: int = WIDTH, height: int = HEIGHT, supersample: int = 1, supervision_views: int = 0
    ) -> None:
        """``supersample`` > 1 adds a second renderer at that many times the size (``render(..., fine=True)``);
        ``supervision_views`` cameras ``sup_XXX`` are added for :meth:`move_cameras` to place."""
        import mujoco

        self.mujoco = mujoco
        spec = mujoco.MjSpec.from_file(str(_asset_path()))
        spec.body("torso").add_freejoint()
        spec.add_texture(
            name="white_sky",
            type=mujoco.mjtTexture.mjTEXTURE_SKYBOX,
            builtin=mujoco.mjtBuiltin.mjBUILTIN_FLAT,
            rgb1=[1, 1, 1],
            rgb2=[1, 1, 1],
            width=8,
            height=8,
        )
        placeholders = np.repeat(rig_cameras()[0][:1], supervision_views, axis=0)
        for prefix, c2w in (("cam", rig_cameras()[0]), ("orbit", orbit_cameras()[0]), ("sup", placeholders)):
            for index, camera in enumerate(c2w):
                added = spec.worldbody.add_camera(
                    name=f"{prefix}_{index:03d}", pos=camera[:3, 3] * BODY_LENGTH_M, fovy=FOVY_DEG
                )
                added.alt.type = mujoco.mjtOrientation.mjORIENTATION_XYAXES
                added.alt.xyaxes = np.concatenate([camera[:3, 0], -camera[:3, 1]])  # MuJoCo: x right, y up, looks -z
        self.model = spec.compile()
        self.model.vis.headlight.ambient[:] = 0.35
        self.model.vis.headlight.diffuse[:] = 0.55
        self.model.vis.quality.shadowsize = 0
        self.data = mujoco.MjData(self.model)
        self.model.vis.global_.offwidth = max(self.model.vis.global_.offwidth, width * supersample)
        self.model.vis.global_.offheight = max(self.model.vis.global_.offheight, height * supersample)
        self.renderer = mujoco.Renderer(self.model, height, width)
        self.fine_renderer = (
            mujoco.Renderer(self.model, height * supersample, width * supersample) if supersample > 1 else None
        )
        self.options = mujoco.MjvOption()
        self.options.geomgroup[:] = 0  # only the skinned mesh is visible, not the bones or collision capsules
        hinge = self.model.jnt_type == mujoco.mjtJoint.mjJNT_HINGE
        self.hinge_qpos = self.model.jnt_qposadr[hinge]
        self.hinge_range = self.model.jnt_range[hinge]
        body = lambda name: mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, name)  # noqa: E731
        self.anchor_bodies = (body("skull"), body("vertebra_C1"))

    def random_pose(self, rng: np.random.Generator, config: RodentConfig) -> tuple[np.ndarray, float, np.ndarray]:
        """Joint angles within limits, a yaw, and a body-centre offset from the rig centre (units)."""
        low, high = self.hinge_range[:, 0], self.hinge_range[:, 1]
        middle, half = (low + high) / 2.0, (high - low) / 2.0 * config.joint_spread
        joints = rng.uniform(middle - half, middle + half)
        yaw = rng.uniform(0.0, 2.0 * math.pi)
        offset = rng.uniform(-config.offset, config.offset, 3) * [1.0, 1.0, 0.5]
        return joints, yaw, offset

    def place(self, joints: np.ndarray, yaw: float, offset: np.ndarray, coat: np.ndarray) -> None:
        """Set the pose; the body centre lands at ``RIG_CENTER + offset``."""
        mujoco, model, data = self.mujoco, self.model, self.data
        data.qpos[:] = 0.0
        data.qpos[self.hinge_qpos] = joints
        data.qpos[3:7] = [math.cos(yaw / 2.0), 0.0, 0.0, math.sin(yaw / 2.0)]
        target = (RIG_CENTER + offset) * BODY_LENGTH_M
        mujoco.mj_kinematics(model, data)
        centre = data.xpos[list(self.anchor_bodies)].mean(0)
        data.qpos[0:3] += target - centre
        mujoco.mj_forward(model, data)  # kinematics alone leaves the cameras (mj_camlight) at the origin
        model.skin_rgba[0, :3] = np.clip(coat, 0.0, 1.0)

    def move_cameras(self, c2w: np.ndarray, prefix: str = "cam", start: int = 0) -> None:
        """Put the cameras ``<prefix>_<start>``... (the rig's: ``cam``) at OpenCV ``c2w [n,4,4]`` (units) for the
        next renders."""
        mujoco, model = self.mujoco, self.model
        for index, camera in enumerate(c2w, start=start):
            camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, f"{prefix}_{index:03d}")
            model.cam_pos[camera_id] = camera[:3, 3] * BODY_LENGTH_M
            # MuJoCo's camera frame: x right, y up, looking down -z (OpenCV's y and z flipped)
            rotation = camera[:3, :3] * np.array([1.0, -1.0, -1.0])
            mujoco.mju_mat2Quat(model.cam_quat[camera_id], rotation.flatten())
        mujoco.mj_forward(model, self.data)

    def centre_of_mass_m(self) -> np.ndarray:
        """The whole animal's centre of mass in MuJoCo's world (metres): the torso is the root of every body."""
        torso = self.mujoco.mj_name2id(self.model, self.mujoco.mjtObj.mjOBJ_BODY, "torso")
        return self.data.subtree_com[torso].copy()

    def pose(self, rng: np.random.Generator, config: RodentConfig) -> dict:
        """A random pose and coat (one sample of the default dataset)."""
        joints, yaw, offset = self.random_pose(rng, config)
        coat = np.asarray(COATS[rng.integers(len(COATS))]) * rng.uniform(0.92, 1.05)
        self.place(joints, yaw, offset, coat)
        return {"yaw_deg": math.degrees(yaw), "coat": self.model.skin_rgba[0, :3].round(3).tolist()}

    def render(self, camera: int | str, fine: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """uint8 RGB [H,W,3] on exact white and z-depth [H,W] in units (0 = background) of a rig camera (its
        index) or any named camera (``orbit_000``); ``fine``: from the supersampled renderer."""
        renderer = self.fine_renderer if fine else self.renderer
        name = f"cam_{camera:03d}" if isinstance(camera, int) else camera
        renderer.update_scene(self.data, camera=name, scene_option=self.options)
        rgb = renderer.render().copy()
        renderer.enable_depth_rendering()
        renderer.update_scene(self.data, camera=name, scene_option=self.options)
        depth = renderer.render().astype(np.float64) / BODY_LENGTH_M
        renderer.disable_depth_rendering()
        background = depth > 20.0  # the sky sits at the far plane (~17 m); the rig is < 1 m away
        rgb[background] = 255
        depth[background] = 0.0
        return rgb, depth.astype(np.float32)

    def close(self) -> None:
        self.renderer.close()
        if self.fine_renderer is not None:
            self.fine_renderer.close()


def generate(out: Path, config: RodentConfig, progress: bool = True) -> None:
    """Write the dataset (see the module docstring) into ``out``."""
    from tqdm import tqdm

    os.environ.setdefault("MUJOCO_GL", "osmesa")
    out.mkdir(parents=True, exist_ok=True)
    scene = RodentScene(supervision_views=config.supervision_views)
    fixed_c2w, _ = rig_cameras()
    orbit_c2w, _ = orbit_cameras()
    rng = np.random.default_rng(config.seed)
    rig_rng = np.random.default_rng([config.seed, 1])  # its own stream: the same poses with and without jitter
    supervision_rng = np.random.default_rng([config.seed, 2])  # and the same poses and rigs with and without these
    extra_rng = np.random.default_rng([config.seed, 3])  # the extra train samples' poses
    first_val = config.samples - config.val_samples
    names, poses = [], {}
    try:
        total = config.samples + config.extra_train_samples
        for sample in tqdm(range(total), desc="rendering rodent samples", disable=not progress):
            name = f"sample_{sample:06d}"
            sample_dir = out / name
            is_val = first_val <= sample < config.samples
            jittered = config.rig_jitter and not is_val
            c2w = rig_jitter_cameras(rig_rng, config.rig_jitter) if jittered else fixed_c2w
            if config.rig_jitter:  # the scene's cameras follow (back to the fixed rig for val samples)
                scene.move_cameras(c2w)
            poses[name] = scene.pose(rng if sample < config.samples else extra_rng, config)
            write_views(sample_dir, "cam", [(c2w[camera], *scene.render(camera)) for camera in range(len(RIG))], name)
            if is_val:  # held out: never inputs, never supervised
                orbit = [(c2w, *scene.render(f"orbit_{i:03d}")) for i, c2w in enumerate(orbit_c2w)]
                write_views(sample_dir / ORBIT_DIR, "orbit", orbit, name)
            elif config.supervision_views:
                supervision = render_supervision_views(scene, supervision_rng, config.supervision_views)
                write_views(sample_dir / SUPERVISION_DIR, "sup", supervision, name)
            names.append(name)
    finally:
        scene.close()
    train = names[:first_val] + names[config.samples :]
    val = names[first_val : config.samples]
    (out / "train.txt").write_text("\n".join(train) + "\n")
    (out / "val.txt").write_text("\n".join(val) + "\n")
    (out / "poses.json").write_text(json.dumps(poses, indent=1))
    (out / "manifest.json").write_text(json.dumps(manifest(config), indent=1))


SUPERVISION_TRIES = 20  # draws of a supervision camera until the whole animal is in its frame


def render_supervision_views(
    scene: RodentScene, rng: np.random.Generator, count: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``count`` views ``(c2w, rgb, depth)`` of the posed scene from :func:`supervision_cameras`. A camera that cuts
    the animal off at the frame's edge is drawn again: its crop would pad the missing part with background, a
    wrong target (after ``SUPERVISION_TRIES`` draws the last one is kept)."""
    views = []
    for index in range(count):
        for _ in range(SUPERVISION_TRIES):
            c2w = supervision_cameras(rng, 1)
            scene.move_cameras(c2w, prefix="sup", start=index)
            rgb, depth = scene.render(f"sup_{index:03d}")
            foreground = depth > 0
            if not (foreground[0].any() or foreground[-1].any() or foreground[:, 0].any() or foreground[:, -1].any()):
                break
        views.append((c2w[0], rgb, depth))
    return views


def write_views(
    folder: Path, prefix: str, views: list[tuple[np.ndarray, np.ndarray, np.ndarray]], sample_id: str
) -> None:
    """Views ``(c2w, rgb, depth)`` as ``folder/images/<prefix>_XXX.png`` (RGBA), ``folder/depth/<prefix>_XXX.npy``
    and ``folder/opencv_cameras.json`` (the generator's intrinsics).

    The alpha is the renderer's exact coverage (depth > 0), not left to the loader's auto-mask: the white coat's lit
    fur is brighter than the auto-mask's threshold in every channel, so an RGB file lost about a third of a white
    animal (half of it seen from above), in holes that differ from view to view, and the model was taught to draw
    them (up to version 2)."""
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "depth").mkdir(exist_ok=True)
    intrinsics = _intrinsics(len(views), WIDTH, HEIGHT)
    frames = []
    for index, (c2w, rgb, depth) in enumerate(views):
        name = f"{prefix}_{index:03d}"
        alpha = np.where(depth > 0, 255, 0).astype(np.uint8)
        Image.fromarray(np.dstack([rgb, alpha])).save(folder / "images" / f"{name}.png")
        np.save(folder / "depth" / f"{name}.npy", depth)
        frames.append(Frame(f"images/{name}.png", WIDTH, HEIGHT, intrinsics[index], np.linalg.inv(c2w)))
    write_cameras(folder / "opencv_cameras.json", frames, sample_id)


OPTIONAL_KEYS = ("rig_jitter", "supervision_views", "extra_train_samples")


def manifest(config: RodentConfig) -> dict:
    return {
        "generator": "gslrm.data.rodent",
        "version": GENERATOR_VERSION,
        # a dataset written before rig_jitter / supervision_views / extra_train_samples existed is the one with 0:
        # its cache stays valid
        "config": {key: value for key, value in asdict(config).items() if key not in OPTIONAL_KEYS or value},
        "body_length_m": BODY_LENGTH_M,
        "image": [WIDTH, HEIGHT],
        "fovy_deg": FOVY_DEG,
        "rig": {"center": RIG_CENTER.tolist(), "cameras": [list(c) for c in RIG]},
        "orbit": {
            "distance": ORBIT_DISTANCE,
            "elevations_deg": list(ORBIT_ELEVATIONS_DEG),
            "azimuths_deg": list(ORBIT_AZIMUTHS_DEG),
            "samples": "val",
        },
    }


def generator_overrides(rodent: dict) -> tuple[str, ...]:
    """The ``data.generator.*`` overrides that name a generated dataset ``rodent`` (``ensure_dataset``'s keywords):
    without them train.py and predict.py would generate the default dataset over it."""
    return tuple(f"data.generator.{key}={value}" for key, value in rodent.items())


def _generate_entry(out: str, config: dict) -> None:
    generate(Path(out), RodentConfig(**config))


def ensure_dataset(root: Path, **overrides) -> Path:
    """Generate into ``root`` unless a dataset with the same manifest is already there (the cache)."""
    config = RodentConfig(**overrides)
    manifest_path = root / "manifest.json"
    if manifest_path.is_file() and json.loads(manifest_path.read_text()) == manifest(config):
        return root
    _asset_path()  # the extra's packages are there (one line if not), before a process is spawned to render
    log.info("generating the rodent dataset into %s (%d samples, once)", root, config.samples)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".rodent-", dir=root.parent))
    try:
        # render in a separate (spawned) process: an OpenGL context left in this process would be inherited by
        # forked DataLoader workers (seen here: a segfault when workers start after rendering)
        process = multiprocessing.get_context("spawn").Process(
            target=_generate_entry, args=(str(staging), asdict(config))
        )
        process.start()
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"rodent generation into {staging} failed (exit code {process.exitcode}); see above")
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=RodentConfig.samples)
    parser.add_argument("--val-samples", type=int, default=RodentConfig.val_samples)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rig-jitter", type=float, default=0.0, help="per-sample camera jitter of train samples")
    parser.add_argument(
        "--supervision-views", type=int, default=0, help="views from random viewpoints per train sample"
    )
    parser.add_argument(
        "--extra-train-samples", type=int, default=0, help="train samples after the val ones (the split before stays)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    val = min(args.val_samples, max(args.samples - 1, 0))
    ensure_dataset(
        args.out,
        samples=args.samples,
        val_samples=val,
        seed=args.seed,
        rig_jitter=args.rig_jitter,
        supervision_views=args.supervision_views,
        extra_train_samples=args.extra_train_samples,
    )
    print(f"wrote {args.samples + args.extra_train_samples} samples to {args.out}")


if __name__ == "__main__":
    main()
