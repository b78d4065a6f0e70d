import os

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault(
    "GSLRM_OFFLINE", "1"
)  # no test reaches a real weights host (tests/test_weights.py serves its own)

# under pytest-xdist the workers share the cores: each worker's torch, and the train.py processes its tests start,
# take their share instead of every one of them spinning a thread per core
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

import fcntl  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


def made_once(tmp_path_factory, name: str, make) -> Path:
    """``name``'s folder, made by ``make(folder)`` once for the whole run: pytest-xdist's workers each hold their own
    session fixtures, so the first worker makes it under a lock in the folder they share and the others wait for it
    and read it (the fixtures below are read-only for the tests that use them)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = shared / name
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if make() fails
        if not (shared / f"{name}.done").exists():
            shutil.rmtree(folder, ignore_errors=True)  # a worker that failed half-way
            folder.mkdir()
            make(folder)
            (shared / f"{name}.done").touch()
    return folder


@pytest.fixture(scope="session")
def rodent_root(tmp_path_factory):
    """A small generated rodent dataset shared by the session (3 train + 1 val samples). ``GSLRM_TEST_RODENT``: the
    same dataset generated elsewhere (a GPU node without MuJoCo; its manifest is checked, read-only)."""
    from cli import TEST_RODENT

    from gslrm.data.rodent import ensure_dataset

    prepared = os.environ.get("GSLRM_TEST_RODENT")
    if prepared:
        return ensure_dataset(Path(prepared), **TEST_RODENT)
    folder = made_once(tmp_path_factory, "rodent", lambda folder: ensure_dataset(folder / "rodent", **TEST_RODENT))
    return folder / "rodent"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, rodent_root):
    """train.py run directory: the tiny model trained 4 steps on rodent_root with the (offline) wandb logger,
    pictures every 2 passes (shared by the eval and refinement tests)."""
    tmp_path = made_once(tmp_path_factory, "trained", lambda folder: _train_tiny(folder, rodent_root))
    return next((tmp_path / "logs" / "train" / "runs").glob("*"))


def _train_tiny(tmp_path, rodent_root) -> None:
    from cli import TRAINED_IMAGE_SIZE, run_script

    run_script(
        "train.py",
        tmp_path,
        rodent_root,
        "loss=l2",
        f"data.image_size={TRAINED_IMAGE_SIZE}",
        "trainer.max_steps=4",
        "val_every=2",
        "vis_every=2",
        "trainer.log_every_n_steps=1",
        "callbacks.visuals.turntable_views=4",
    )


def skip_or_fail(reason: str) -> None:
    """A test whose real component (the SLURM daemons, Chromium) cannot start: skipped with the reason on a developer's
    machine, failed with it under CI (``CI=true``), where `make test` installs them and a skip would hide a gap."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def compose(config_name: str, *overrides: str):
    """``conf/<config_name>.yaml`` composed with ``overrides`` as the entry points compose it (schemas checked)."""
    from gslrm.schemas import compose as compose_config

    return compose_config(config_name, overrides)


def composition_error(config_name: str, *overrides: str) -> str:
    """What Hydra prints when composing fails (the error and its OmegaConf cause), for config-error tests."""
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as error:
        compose(config_name, *overrides)
    return f"{error.value}\n{error.value.__cause__ or ''}"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


def write_sample(root, name, num_views=6, width=36, height=32, mode="RGB", distance=2.7):
    """A tiny valid sample: a ring of cameras looking at the origin, images with a dark square in the middle."""
    from PIL import Image

    from gslrm.cameras import turntable_cameras
    from gslrm.data.format import Frame, write_cameras

    c2w, _ = turntable_cameras(num_views, resolution=height, radius=distance, elevation_deg=20.0, dtype=torch.float64)
    sample = root / name
    (sample / "images").mkdir(parents=True, exist_ok=True)
    frames = []
    for view in range(num_views):
        pixels = np.full((height, width, 4), 255, np.uint8)
        pixels[8:24, 10:26, :3] = (40 + 30 * view, 80, 120)
        pixels[..., 3] = 0
        pixels[8:24, 10:26, 3] = 255
        image = Image.fromarray(pixels, "RGBA")
        if mode != "RGBA":
            image = image.convert(mode)
        path = f"images/cam_{view:03d}.png"
        image.save(sample / path)
        k = np.array([40.0, 40.0, width / 2, height / 2])
        frames.append(Frame(path, width, height, k, np.linalg.inv(c2w[view].numpy())))
    write_cameras(sample / "opencv_cameras.json", frames, name)
    return sample


@pytest.fixture
def tiny_root(tmp_path):
    """ROOT with 3 train samples and 1 val sample in the documented layout."""
    for index in range(4):
        write_sample(tmp_path, f"s{index}")
    (tmp_path / "train.txt").write_text("s0\ns1\ns2\n")
    (tmp_path / "val.txt").write_text(f"{tmp_path / 's3'}\n")  # FaceLift-style absolute path works too
    return tmp_path


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A one-node SLURM cluster (munged, slurmctld, slurmd as root), stopped by PID at the end of the session."""
    from slurm_cluster import SlurmCluster, why_not_available

    reason = why_not_available()
    if reason is not None:
        skip_or_fail(f"no SLURM cluster: {reason}")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except (RuntimeError, OSError) as error:
        skip_or_fail(f"the SLURM daemons did not start: {error}")
    yield cluster
    cluster.stop()


def pytest_collection_modifyitems(config, items):
    """The SLURM scenarios first: they wait on the cluster (requeues, restarts) more than they compute, so under
    xdist their worker spends that time while the other worker runs the rest of the suite."""
    items.sort(key=lambda item: item.get_closest_marker("slurm") is None)
