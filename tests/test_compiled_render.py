"""The compiled projection against gsplat's PyTorch projection, the SIMD compositing against its scalar build, and the
library's build cache, build lock and typed call boundary."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import warm_python
from cli import ROOT

from gslrm.model.gaussians import Gaussians
from gslrm.render import RenderConfig, render
from gslrm.render.compiled import simd_lanes
from gslrm.render.compiled_projection import project_compiled, supports
from gslrm.render.projection import project
from tests.test_render import cameras, random_scene

DIFFERENTIABLE = ("means", "quats", "scales", "features", "opacities")


def awkward_scene(dtype, n=400):
    """Every branch of the projection: Gaussians off the image's sides (x/z and y/z beyond gsplat's frustum clamp,
    some still large enough to reach into the image), behind the camera and past the near plane, unnormalised
    quaternions, SH colours below the 0 clamp, and opacities under 1/255."""
    g = random_scene(n, batch=2, dtype=dtype, seed=4)
    generator = torch.Generator().manual_seed(5)
    means = g.means.clone()
    means[:, : n // 4] *= 4.0  # far out: clamped x/z, y/z, many culled; some behind the camera at radius 2.7
    scales = g.scales.clone()
    scales[:, : n // 8] *= 30.0  # ... and some of those big enough to reach the image
    quats = g.quats * torch.empty(2, n, 1).uniform_(0.5, 2.0, generator=generator).to(dtype)
    features = g.features * 3.0  # C0 f + 0.5 below 0 for many
    opacities = g.opacities.clone()
    opacities[:, :10] = 1e-3
    return Gaussians(means, features, scales, quats, opacities)


def weighted_outputs(splats, seed=0):
    """A scalar of every differentiable output of the projection, weighted per element (where the splat is drawn:
    culled splats get no gradient from the rasterizer, and their 2D values are not defined the same way)."""
    generator = torch.Generator().manual_seed(seed)
    drawn = (splats.radii > 0).all(dim=-1, keepdim=True)
    total = 0
    for field in ("means2d", "conics", "features", "opacities"):
        value = getattr(splats, field)
        value = value[..., None] if field == "opacities" else value
        weights = torch.randn(value.shape, generator=generator, dtype=value.dtype)
        total = total + (value * weights * drawn).sum()
    return total


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compiled_projection_equals_gsplats_torch_projection(dtype):
    g = awkward_scene(dtype)
    leaves = [getattr(g, name).requires_grad_(True) for name in DIFFERENTIABLE]
    c2w, k = cameras(2, 3, 40, dtype=dtype)
    results = []
    for projection in (project, project_compiled):
        splats = projection(g, c2w, k, 40, 40)
        grads = torch.autograd.grad(weighted_outputs(splats), leaves)
        results.append((splats, grads))
    (reference, reference_grads), (compiled, compiled_grads) = results
    assert torch.equal(reference.radii, compiled.radii)
    drawn = (reference.radii > 0).all(dim=-1)
    assert 0.3 < drawn.float().mean() < 0.95  # some culled, most drawn
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    for field in ("means2d", "conics", "features", "depths", "opacities"):
        expected, value = getattr(reference, field)[drawn], getattr(compiled, field)[drawn]
        assert (expected - value).abs().max() <= tolerance * max(1.0, expected.abs().max().item()), field
    for name, expected, value in zip(DIFFERENTIABLE, reference_grads, compiled_grads, strict=True):
        assert (expected - value).abs().max() <= tolerance * max(1.0, expected.abs().max().item()), name
        assert value.abs().max() > 0, name


def test_compiled_projection_clamps_and_culls_where_gsplat_does():
    """The awkward scene does reach the branches it is for, in the reference's own terms."""
    g = awkward_scene(torch.float64)
    c2w, k = cameras(2, 3, 40, dtype=torch.float64)
    splats = project_compiled(g, c2w, k, 40, 40)
    depths = splats.depths
    assert (depths < 0.01).any()  # behind the camera or before the near plane: culled
    assert ((splats.radii == 0).all(dim=-1) & (depths > 0.01)).any()  # off the image: culled
    x_over_z = (splats.means2d[..., 0] - k[0, 0, 2]) / k[0, 0, 0]  # beyond 0.5 width / fx + 0.3 tan_fov: clamped
    drawn = (splats.radii > 0).all(dim=-1)
    assert (drawn & (x_over_z.abs() > 1.3 * 20 / k[0, 0, 0])).any()
    assert (splats.features[..., :3] == 0).any()  # the colour clamp


def test_compiled_projection_gradients_match_finite_differences():
    g = awkward_scene(torch.float64, n=40)
    c2w, k = cameras(1, 2, 16, dtype=torch.float64)
    g = g.map(lambda t: t[:1])

    def outputs(means, quats, scales, features):
        splats = project_compiled(Gaussians(means, features, scales, quats, g.opacities), c2w, k, 16, 16)
        return weighted_outputs(splats, seed=3)

    inputs = tuple(getattr(g, name).clone().requires_grad_(True) for name in ("means", "quats", "scales", "features"))
    assert torch.autograd.gradcheck(outputs, inputs, eps=1e-7, atol=1e-5, rtol=1e-4)


def test_render_projects_with_the_reference_where_the_compiled_path_does_not_apply():
    """SH degree 1 and cameras that require gradients go through gsplat's torch projection: same image as the torch
    backend, and gradients reach the cameras."""
    g = random_scene(300)
    c2w, k = cameras(1, 2, 24)
    sh1 = Gaussians(
        g.means, torch.cat([g.features, 0.1 * torch.randn(1, 300, 3, 3)], dim=2), g.scales, g.quats, g.opacities
    )
    assert not supports(sh1, c2w, k) and supports(g, c2w, k)
    compiled = render(sh1, c2w, k, 24, 24, settings=RenderConfig(cpu_backend="compiled"))
    reference = render(sh1, c2w, k, 24, 24, settings=RenderConfig(cpu_backend="torch"))
    assert (compiled.rgb - reference.rgb).abs().max() < 1e-5
    moving = c2w.clone().requires_grad_(True)
    assert not supports(g, moving, k)
    render(g, moving, k, 24, 24, settings=RenderConfig(cpu_backend="compiled")).rgb.sum().backward()
    assert moving.grad is not None and moving.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="SH degree 0"):
        project_compiled(sh1, c2w, k, 24, 24)


SCALAR_SCRIPT = """
import sys, numpy as np, torch
from gslrm.render import RenderConfig, render
from gslrm.render.compiled import simd_lanes
from tests.test_render import cameras, random_scene
torch.set_num_threads(2)
g = random_scene(2000, batch=2)
g.opacities = 0.5 + 0.5 * g.opacities  # pixels that stop early, clamped alphas
leaves = [t.requires_grad_(True) for t in (g.means, g.features, g.scales, g.quats, g.opacities)]
c2w, k = cameras(2, 3, 36)
out = render(g, c2w, k, 36, 36, settings=RenderConfig(cpu_backend="compiled"))
image = torch.cat([out.rgb, out.depth, out.alpha], dim=2)
weights = torch.linspace(-1, 1, image.numel()).reshape(image.shape)
grads = torch.autograd.grad((image * weights).sum(), leaves)
np.savez(sys.argv[1], lanes=simd_lanes(), image=image.detach().numpy(), *[t.numpy() for t in grads])
"""


@pytest.fixture(scope="module")
def scalar_ext_dir(tmp_path_factory) -> Path:
    """A cache folder holding the scalar (one-lane) build, compiled once for the tests that need it."""
    folder = tmp_path_factory.mktemp("scalar_ext")
    env = {**os.environ, "GSLRM_EXT_DIR": str(folder), "GSLRM_SIMD": "scalar"}
    done = warm_python.run(["-m", "gslrm.render.compiled"], env=env)
    assert done.returncode == 0 and list(folder.glob("*.so")), done.stdout + done.stderr
    return folder


@pytest.mark.slow  # starts a Python process (an entry point, a compile, a spawned job)
def test_simd_compositing_equals_the_scalar_build(tmp_path, scalar_ext_dir):
    """The native SIMD build (this process's cached one) against the one-lane build (GSLRM_SIMD=scalar): the forward
    is lane-wise the same arithmetic; gradients differ only in the order lanes are summed (float rounding)."""
    from gslrm.render.compiled import library_path

    results = {}
    for name, simd, folder in (("native", None, library_path().parent), ("scalar", "scalar", scalar_ext_dir)):
        env = {**os.environ, "GSLRM_EXT_DIR": str(folder)}
        env.pop("GSLRM_SIMD", None)
        if simd:
            env["GSLRM_SIMD"] = simd
        done = warm_python.run(["-c", SCALAR_SCRIPT, str(tmp_path / f"{name}.npz")], env=env, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-2000:]
        results[name] = np.load(tmp_path / f"{name}.npz")
    native, scalar = results["native"], results["scalar"]
    assert int(scalar["lanes"]) == 1 and int(native["lanes"]) == simd_lanes() >= 4
    assert np.abs(native["image"] - scalar["image"]).max() <= 1e-6
    for key in [f"arr_{i}" for i in range(5)]:
        assert np.abs(native[key] - scalar[key]).max() <= 1e-5 * max(1.0, np.abs(scalar[key]).max()), key


BUILD_SCRIPT = """
import json, logging, sys, time
from pathlib import Path
logging.basicConfig(level=logging.INFO, format="%(message)s")
go = Path(sys.argv[1])
while not go.exists():  # both processes are up before either builds
    time.sleep(0.01)
from gslrm.render import compiled
path, compiled_here = compiled.build_library()
print(json.dumps({"path": str(path), "compiled": compiled_here, "lanes": compiled.simd_lanes()}))
"""


def _python(script: str, *args: str, ext_dir: Path, simd: str | None = None, wait: bool = True):
    env = {**os.environ, "GSLRM_EXT_DIR": str(ext_dir)}
    env.pop("GSLRM_SIMD", None)
    if simd:
        env["GSLRM_SIMD"] = simd
    process = warm_python.start(["-c", script, *args], env=env, cwd=ROOT)
    return process.communicate(timeout=300) if wait else process


@pytest.mark.slow  # starts a Python process (an entry point, a compile, a spawned job)
def test_two_processes_building_at_once_compile_once(tmp_path):
    """DDP ranks that start together: one compiles under the file lock, the other waits and loads its file."""
    go = tmp_path / "go"
    processes = [_python(BUILD_SCRIPT, str(go), ext_dir=tmp_path / "ext", wait=False) for _ in range(2)]
    go.touch()
    outputs = [process.communicate(timeout=300) for process in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-2000:]
    results = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
    assert sorted(result["compiled"] for result in results) == [False, True]
    assert results[0]["path"] == results[1]["path"] and results[0]["lanes"] == results[1]["lanes"] == simd_lanes()
    assert sum("compiling the CPU renderer" in stderr for _, stderr in outputs) == 1
    assert [p.name for p in (tmp_path / "ext").glob("*.so")] == [Path(results[0]["path"]).name]


@pytest.mark.slow  # starts a Python process (an entry point, a compile, a spawned job)
def test_a_cached_library_built_for_other_flags_is_rebuilt(tmp_path, scalar_ext_dir):
    """A file under this machine's cache name that was built with other flags (here the scalar build, as a binary
    copied from another node would be) is detected by the key it reports, rebuilt, and never run."""
    native_dir = tmp_path / "native"
    go = tmp_path / "go"
    go.touch()
    forged = next(scalar_ext_dir.glob("*.so"))
    probe = "from gslrm.render import compiled; print(compiled.library_path())"
    native_path = Path(_python(probe, ext_dir=native_dir)[0].strip())
    native_path.parent.mkdir(parents=True)
    shutil.copy(forged, native_path)  # the native name, the scalar binary
    stdout, stderr = _python(BUILD_SCRIPT, str(go), ext_dir=native_dir)
    assert "was built for other flags or another CPU: rebuilding it" in stderr, stderr[-2000:]
    assert json.loads(stdout.strip().splitlines()[-1])["lanes"] == simd_lanes() > 1  # the native build runs


def test_the_call_boundary_is_typed():
    """Every field named or a TypeError before the call; the library's struct layouts equal the Python side's, and a
    layout that differs (a field moved) is reported by name."""
    import ctypes

    from gslrm.render import compiled

    with pytest.raises(TypeError, match=r"gslrm_intersect_tiles: missing fields \['ids'\], unknown fields \['idz'\]"):
        compiled.call(
            "gslrm_intersect_tiles",
            torch.float32,
            means2d=None,
            radii=None,
            depths=None,
            images=0,
            n=0,
            tile_size=8,
            tiles_x=1,
            tiles_y=1,
            threads=1,
            rects=None,
            counts=None,
            starts=None,
            idz=None,
        )
    with pytest.raises(TypeError, match="float32 or float64, not torch.float16"):
        compiled.call("gslrm_intersect_tiles", torch.float16)
    library = compiled.library()
    assert compiled.layout_mismatch(library) is None
    structure = compiled.ABI_STRUCTS["IntersectArgs"]
    swapped = list(structure._fields_)
    swapped[3], swapped[4] = swapped[4], swapped[3]
    altered = type("IntersectArgs", (ctypes.Structure,), {"_fields_": swapped})
    original = dict(compiled.ABI_STRUCTS)
    try:
        compiled.ABI_STRUCTS["IntersectArgs"] = altered
        message = compiled.layout_mismatch(library)
        assert message.startswith("IntersectArgs: the library has struct_size:0:8;dtype:8:4;means2d:16:8;radii:24:8;")
        assert "compiled.py expects struct_size:0:8;dtype:8:4;means2d:16:8;depths:24:8;radii:32:8;" in message
    finally:
        compiled.ABI_STRUCTS.clear()
        compiled.ABI_STRUCTS.update(original)
    # a struct of the wrong size is refused by the library itself, before it reads a field
    args = structure(struct_size=ctypes.sizeof(structure) - 8, dtype=0)
    assert library.gslrm_intersect_tiles(ctypes.byref(args)) == compiled.BAD_STRUCT_SIZE
