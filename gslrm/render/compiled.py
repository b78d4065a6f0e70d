"""The compiled CPU renderer: ``csrc/rasterize.cpp`` and ``csrc/project.cpp`` built with the system C++ compiler, called
through ctypes.

Rasterization has the same inputs, outputs and rules as ``tiles.rasterize_tiles`` (which stays as the readable
reference): tile intersection with its depth sort (tested to give ``tiles.intersections``' exact lists), SIMD
compositing and its backward all run compiled, on all cores (``torch.get_num_threads()`` threads). The projection and
its backward (``compiled_projection.py``) replace gsplat's PyTorch projection and SH code, which stays the reference.
Why a plain C++ library rather than numba or a torch C++ extension: no new dependency and no torch headers (it builds
in about 5 s where a torch extension takes about a minute), and the SIMD width is ours to fix; measurements in
docs/performance.md.

The call boundary is typed: every exported function takes one argument struct (``csrc/abi.h``), declared here again as
a ``ctypes.Structure``. At load the library's own layout of each struct (field names, offsets, sizes) must equal
ours, or the library is refused with the struct named; each call passes the struct's size and its dtype, which the
library checks before it reads anything, and a struct is only ever built with every one of its fields named.

The library is built on first use (or ahead of time by ``python -m gslrm.render.compiled``, which ``make install``
runs) into ``$GSLRM_EXT_DIR`` (default ``~/.cache/gslrm/ext``). Its name hashes the sources, the flags and the
instruction set the compiler targets on this machine (the macros ``-march=native`` defines: AVX-512, AVX2, FMA, ...),
so two nodes whose CPUs share a model name but not an instruction set never share a binary; the library also
reports the key it was built with, and a cached file whose key differs is rebuilt. Processes that start together (DDP
ranks, loader workers) build under a file lock: one compiles, the others wait and load its file, which is written
atomically. Where it cannot be built (no compiler), ``available()`` is False with the reason and ``render()`` falls
back to the torch path with a one-line warning.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
from functools import cache
from pathlib import Path

import torch
from filelock import FileLock
from jaxtyping import Float
from torch import Tensor

from gslrm.files import written_atomically
from gslrm.render.projection import Splats
from gslrm.render.tiles import GSPLAT_MAX_ALPHA

__all__ = [
    "available",
    "unavailable_reason",
    "rasterize_compiled",
    "intersect_tiles",
    "library_path",
    "build",
    "build_library",
    "library",
    "simd_lanes",
    "call",
    "ABI_STRUCTS",
]

log = logging.getLogger(__name__)

CSRC = Path(__file__).with_name("csrc")
SOURCES = [CSRC / name for name in ("rasterize.cpp", "project.cpp")]
HEADERS = [CSRC / "abi.h"]
# -march=native: the SIMD width follows the CPU (AVX-512, AVX2, SSE), and the cache key follows what -march=native
# means on this machine; no -ffast-math (NaN and the skip/stop comparisons must behave as in the reference).
# GSLRM_SIMD=scalar builds the scalar fallback (one lane) instead, for comparison.
FLAGS = [
    "-O3",
    "-march=native",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fopenmp",
    "-std=c++20",
    "-shared",
    "-fPIC",
    "-pthread",
]
ABI_VERSION = 5
MAX_TILE, MAX_CHANNELS = 32, 8
BUILD_LOCK_TIMEOUT_S = 600  # a compile takes seconds; a lock held this long belongs to a process that hung
OK, UNSUPPORTED, BAD_STRUCT_SIZE, BAD_DTYPE = 0, 1, 2, 3  # abi.h's status codes
DTYPES = {torch.float32: 0, torch.float64: 1}

_P, _I32, _I64, _F64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_double


def _args(name: str, fields: list[tuple[str, type]]) -> type[ctypes.Structure]:
    head = [("struct_size", _I64), ("dtype", _I32)]
    return type(name, (ctypes.Structure,), {"_fields_": head + fields})


_SPLATS_2D = [("means2d", _P), ("conics", _P), ("opacities", _P), ("features", _P), ("ids", _P), ("starts", _P)]
_TILES = [("counts", _P), ("images", _I32), ("width", _I32), ("height", _I32), ("tile_size", _I32)]
_TILES += [("tiles_x", _I32), ("tiles_y", _I32), ("channels", _I32), ("max_alpha", _F64), ("threads", _I32)]
_GAUSSIANS = [("means", _P), ("quats", _P), ("scales", _P)]
_CAMERAS = [("viewmats", _P), ("intrinsics", _P), ("scenes", _I32), ("views", _I32), ("gaussians", _I64)]
_CAMERAS += [("width", _I32), ("height", _I32), ("eps2d", _F64), ("near_plane", _F64), ("far_plane", _F64)]
_CAMERAS += [("threads", _I32)]
# the argument structs of csrc/abi.h, field for field (the library's layouts are compared with these at load)
ABI_STRUCTS = {
    "RasterizeForwardArgs": _args(
        "RasterizeForwardArgs",
        _SPLATS_2D
        + _TILES
        + [("splats", _I64), ("out_features", _P), ("out_transmittance", _P)]
        + [("out_last", _P), ("out_half", _P)],
    ),
    "RasterizeBackwardArgs": _args(
        "RasterizeBackwardArgs",
        _SPLATS_2D
        + _TILES
        + [("transmittance", _P), ("last", _P), ("half", _P), ("grad_features", _P)]
        + [("grad_transmittance", _P), ("splats_per_image", _I64), ("grad_splats", _P)],
    ),
    "IntersectArgs": _args(
        "IntersectArgs",
        [("means2d", _P), ("radii", _P), ("depths", _P), ("images", _I32), ("n", _I64), ("tile_size", _I32)]
        + [("tiles_x", _I32), ("tiles_y", _I32), ("threads", _I32), ("rects", _P), ("counts", _P)]
        + [("starts", _P), ("ids", _P)],
    ),
    "ProjectForwardArgs": _args(
        "ProjectForwardArgs",
        _GAUSSIANS
        + [("opacities", _P), ("sh0", _P)]
        + _CAMERAS
        + [("means2d", _P), ("conics", _P), ("features", _P), ("depths", _P), ("radii", _P)],
    ),
    "ProjectBackwardArgs": _args(
        "ProjectBackwardArgs",
        _GAUSSIANS
        + [("sh0", _P), ("viewmats", _P), ("intrinsics", _P), ("radii", _P)]
        + _CAMERAS[2:]
        + [("grad_means2d", _P), ("grad_conics", _P), ("grad_features", _P), ("grad_means", _P)]
        + [("grad_quats", _P), ("grad_scales", _P), ("grad_sh0", _P)],
    ),
}
FUNCTIONS = {  # exported function -> its argument struct
    "gslrm_rasterize_forward": "RasterizeForwardArgs",
    "gslrm_rasterize_backward": "RasterizeBackwardArgs",
    "gslrm_intersect_tiles": "IntersectArgs",
    "gslrm_project_forward": "ProjectForwardArgs",
    "gslrm_project_backward": "ProjectBackwardArgs",
}


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


def _flags() -> list[str]:
    return FLAGS + (["-DGSLRM_SCALAR"] if os.environ.get("GSLRM_SIMD") == "scalar" else [])


@cache
def _target_isa(compiler: str, flags: tuple[str, ...]) -> str:
    """What the compiler targets with ``flags`` on this machine: its predefined macros (``__AVX512F__``,
    ``__AVX2__``, ``__FMA__``, ... and its version). The CPU's model name would not do: two nodes can share one and
    differ in instruction sets (a VM's CPU flags, a BIOS setting), and a binary built for the other would die of
    SIGILL."""
    isa_flags = [flag for flag in flags if flag.startswith(("-m", "-D"))]  # -march=native, -DGSLRM_SCALAR
    result = subprocess.run(
        [compiler, *isa_flags, "-dM", "-E", "-x", "c++", os.devnull], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"{compiler} could not report its target: {result.stderr.strip().splitlines()[-1:]}")
    return "\n".join(sorted(result.stdout.splitlines()))


def build_key() -> str:
    """The cache key of the library this process needs: sources, flags, compiler target and machine."""
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler found (install g++ or set CXX)")
    flags = _flags()
    sources = b"".join(path.read_bytes() for path in SOURCES + HEADERS)
    target = _target_isa(compiler, tuple(flags))
    material = sources + " ".join(flags).encode() + target.encode() + platform.machine().encode()
    return hashlib.sha256(material).hexdigest()[:16]


def library_path(key: str | None = None) -> Path:
    base = Path(os.environ.get("GSLRM_EXT_DIR", Path.home() / ".cache" / "gslrm" / "ext"))
    return base / f"libgslrm_cpu_{key or build_key()}.so"


def build_library(force: bool = False) -> tuple[Path, bool]:
    """The library's path, compiled first unless it is cached (or ``force``), and whether this call compiled it.
    Processes building at once compile once: the first holds the lock, the others then find its file."""
    key = build_key()
    target = library_path(key)
    if target.exists() and not force:
        return target, False
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{target}.lock", timeout=BUILD_LOCK_TIMEOUT_S):
        if target.exists() and not force:  # built by the process that held the lock before us
            return target, False
        compiler = _compiler()
        with written_atomically(target) as partial:  # another process sees no library or the whole one
            flags = [*_flags(), f'-DGSLRM_BUILD_KEY="{key}"']
            command = [compiler, *flags, *map(str, SOURCES), "-o", str(partial)]
            log.info("compiling the CPU renderer: %s", target.name)
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                names = " ".join(source.name for source in SOURCES)
                raise RuntimeError(f"{compiler} failed on {names}: {result.stderr.strip().splitlines()[-1:]}")
    return target, True


def build(force: bool = False) -> Path:
    """Compile the library if it is not cached yet; returns its path. Raises RuntimeError with the reason."""
    return build_library(force)[0]


def _layout(structure: type[ctypes.Structure]) -> str:
    """``structure``'s layout in abi.h's format: name:offset:size of each field, then the size."""
    fields = "".join(
        f"{name}:{getattr(structure, name).offset}:{ctypes.sizeof(kind)};" for name, kind in structure._fields_
    )
    return f"{fields}size:{ctypes.sizeof(structure)}"


def layout_mismatch(loaded: ctypes.CDLL) -> str | None:
    """Which argument struct the library lays out otherwise than this module (None when all agree)."""
    loaded.gslrm_struct_layout.argtypes, loaded.gslrm_struct_layout.restype = [ctypes.c_char_p], ctypes.c_char_p
    for name, structure in ABI_STRUCTS.items():
        theirs = loaded.gslrm_struct_layout(name.encode())
        ours = _layout(structure)
        if theirs is None or theirs.decode() != ours:
            found = "absent" if theirs is None else theirs.decode()
            return f"{name}: the library has {found}, gslrm/render/compiled.py expects {ours}"
    return None


def _load(path: Path) -> ctypes.CDLL:
    loaded = ctypes.CDLL(str(path))
    loaded.gslrm_build_key.restype = ctypes.c_char_p
    for function, struct in FUNCTIONS.items():
        getattr(loaded, function).argtypes = [ctypes.POINTER(ABI_STRUCTS[struct])]
        getattr(loaded, function).restype = ctypes.c_int32
    return loaded


def built_with(path: Path, key: str) -> bool:
    """Whether the library file at ``path`` was built for ``key``, read from its bytes (the key is a string
    literal in it): checked before the file is loaded, because a process cannot load a replaced file again under
    the same name (the dynamic loader hands back the first one)."""
    return f"gslrm-build-key:{key}".encode() in path.read_bytes()


@cache
def _library() -> tuple[ctypes.CDLL | None, str]:
    try:
        key = build_key()
        path = build()
        if not built_with(path, key):  # a file put there by another build (another node, other flags): rebuilt
            log.warning("%s was built for other flags or another CPU: rebuilding it", path)
            path = build(force=True)
        loaded = _load(path)
        if loaded.gslrm_rasterize_abi_version() != ABI_VERSION:
            return None, f"{path}: the cached library is of another version (remove it to rebuild)"
        mismatch = layout_mismatch(loaded)
        if mismatch is not None:
            return None, f"{path}: argument structs differ from the Python side's: {mismatch}"
        return loaded, ""
    except (RuntimeError, OSError, AttributeError) as error:
        return None, str(error)


def available() -> bool:
    return _library()[0] is not None


def unavailable_reason() -> str:
    return _library()[1]


def library() -> ctypes.CDLL:
    """The loaded library (raises with the reason where it is unavailable)."""
    loaded, reason = _library()
    if loaded is None:
        raise RuntimeError(f"the compiled CPU renderer is unavailable: {reason}")
    return loaded


def simd_lanes() -> int:
    """Floats per SIMD vector the compositing runs on (16: AVX-512, 8: AVX2, 4: SSE, 1: the scalar build)."""
    return int(library().gslrm_rasterize_lanes())


def _address(value) -> int | float | None:
    """A tensor as its data pointer (None: a null pointer); numbers pass through to their typed field."""
    return value.data_ptr() if isinstance(value, Tensor) else value


def call(function: str, dtype: torch.dtype, **arguments) -> None:
    """``function(&args)`` with its argument struct built from ``arguments``, every field named (a missing or an
    unknown one is a TypeError before the call); the library's status is turned into an error."""
    if dtype not in DTYPES:
        raise TypeError(f"{function}: the compiled renderer computes in float32 or float64, not {dtype}")
    structure = ABI_STRUCTS[FUNCTIONS[function]]
    expected = {name for name, _ in structure._fields_} - {"struct_size", "dtype"}
    if set(arguments) != expected:
        missing, unknown = sorted(expected - set(arguments)), sorted(set(arguments) - expected)
        raise TypeError(f"{function}: missing fields {missing}, unknown fields {unknown}")
    values = {name: _address(value) for name, value in arguments.items()}
    args = structure(struct_size=ctypes.sizeof(structure), dtype=DTYPES[dtype], **values)
    status = getattr(library(), function)(ctypes.byref(args))
    if status == UNSUPPORTED:
        raise ValueError(f"compiled rasterizer: tile_size <= {MAX_TILE} and <= {MAX_CHANNELS} channels")
    if status != OK:
        raise RuntimeError(f"{function}: the library refused its arguments (status {status}: struct size or dtype)")


def intersect_tiles(splats: Splats, tile_size: int, tiles_x: int, tiles_y: int) -> tuple[Tensor, Tensor, Tensor]:
    """``tiles.intersections`` compiled: flat splat ids per tile in depth order, the per-tile starts and counts."""
    images, n = splats.depths.shape
    means2d = splats.means2d.detach().contiguous()
    radii = splats.radii.to(torch.int32).contiguous()
    depths = splats.depths.detach().to(means2d.dtype).contiguous()
    counts = torch.zeros(images * tiles_x * tiles_y, dtype=torch.int64)
    rects = torch.empty(images * n, 4, dtype=torch.int32)  # each splat's tile rectangle, from the first call
    common = dict(means2d=means2d, radii=radii, depths=depths, images=images, n=n, tile_size=tile_size)
    common.update(tiles_x=tiles_x, tiles_y=tiles_y, threads=torch.get_num_threads(), rects=rects)
    # two passes: the first counts each tile's splats, the second fills the lists at the starts the counts give
    call("gslrm_intersect_tiles", means2d.dtype, **common, counts=counts, starts=None, ids=None)
    starts = torch.cumsum(counts, 0) - counts
    ids = torch.empty(int(counts.sum()), dtype=torch.int64)
    call("gslrm_intersect_tiles", means2d.dtype, **common, counts=None, starts=starts, ids=ids)
    return ids, starts, counts


class _Composite(torch.autograd.Function):
    """Compiled compositing: per-image accumulated features and final transmittance, with gsplat's backward."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, ids, starts, counts, layout, max_alpha):
        images, height, width, tile_size, tiles_x, tiles_y = layout
        channels, dtype = features.shape[-1], features.dtype
        accumulated = torch.empty(images, height, width, channels, dtype=dtype)
        transmittance = torch.empty(images, height, width, dtype=dtype)
        last = torch.empty(images, height, width, dtype=torch.int32)
        half = torch.empty(len(means2d), dtype=dtype)  # each splat's reachable half-height, reused by the backward
        inputs = [t.contiguous() for t in (means2d, conics, opacities, features)]
        call(
            "gslrm_rasterize_forward",
            dtype,
            **dict(zip(("means2d", "conics", "opacities", "features"), inputs, strict=True)),
            **_tile_layout(ids, starts, counts, layout, channels, max_alpha),
            splats=len(means2d),
            out_features=accumulated,
            out_transmittance=transmittance,
            out_last=last,
            out_half=half,
        )
        ctx.save_for_backward(*inputs, ids, starts, counts, transmittance, last, half)
        ctx.layout, ctx.max_alpha = layout, max_alpha
        ctx.mark_non_differentiable(last)
        return accumulated, transmittance

    @staticmethod
    def backward(ctx, grad_accumulated, grad_transmittance):
        means2d, conics, opacities, features, ids, starts, counts, transmittance, last, half = ctx.saved_tensors
        images = ctx.layout[0]
        channels, dtype = features.shape[-1], features.dtype
        grad_accumulated = (
            torch.zeros_like(transmittance[..., None].expand(-1, -1, -1, channels))
            if grad_accumulated is None
            else grad_accumulated.contiguous()
        )
        grad_transmittance = (
            torch.zeros_like(transmittance) if grad_transmittance is None else grad_transmittance.contiguous()
        )
        per_splat = torch.empty(len(means2d), 6 + channels, dtype=dtype)
        call(
            "gslrm_rasterize_backward",
            dtype,
            means2d=means2d,
            conics=conics,
            opacities=opacities,
            features=features,
            **_tile_layout(ids, starts, counts, ctx.layout, channels, ctx.max_alpha),
            transmittance=transmittance,
            last=last,
            half=half,
            grad_features=grad_accumulated,
            grad_transmittance=grad_transmittance,
            splats_per_image=len(means2d) // images,
            grad_splats=per_splat,
        )
        grad_means2d, grad_conics, grad_opacities, grad_features = per_splat.split([2, 3, 1, channels], dim=-1)
        return grad_means2d, grad_conics, grad_opacities[:, 0], grad_features, None, None, None, None, None


def _tile_layout(ids, starts, counts, layout, channels: int, max_alpha: float) -> dict:
    """The fields the forward and backward compositing share: the tile lists and the image layout."""
    images, height, width, tile_size, tiles_x, tiles_y = layout
    return dict(
        ids=ids,
        starts=starts,
        counts=counts,
        images=images,
        width=width,
        height=height,
        tile_size=tile_size,
        tiles_x=tiles_x,
        tiles_y=tiles_y,
        channels=channels,
        max_alpha=max_alpha,
        threads=torch.get_num_threads(),
    )


def rasterize_compiled(
    splats: Splats,
    width: int,
    height: int,
    background: Float[Tensor, "i c"],
    tile_size: int = 8,
    max_alpha: float = GSPLAT_MAX_ALPHA,
) -> tuple[Float[Tensor, "i h w c"], Float[Tensor, "i h w 1"]]:
    """``tiles.rasterize_tiles`` compiled: ``features`` blended over ``background`` and the accumulated alpha."""
    if splats.features.device.type != "cpu":
        raise ValueError("the compiled rasterizer runs on CPU tensors (CUDA renders with gsplat)")
    images, n, channels = splats.features.shape
    if tile_size > MAX_TILE or channels > MAX_CHANNELS:
        raise ValueError(f"compiled rasterizer: tile_size <= {MAX_TILE} and <= {MAX_CHANNELS} channels")
    tiles_x, tiles_y = -(-width // tile_size), -(-height // tile_size)
    ids, starts, per_tile = intersect_tiles(splats, tile_size, tiles_x, tiles_y)
    accumulated, transmittance = _Composite.apply(
        splats.means2d.reshape(images * n, 2),
        splats.conics.reshape(images * n, 3),
        splats.opacities.reshape(images * n),
        splats.features.reshape(images * n, channels),
        ids,
        starts,
        per_tile,
        (images, height, width, tile_size, tiles_x, tiles_y),
        float(max_alpha),
    )
    transmittance = transmittance[..., None]
    return accumulated + background[:, None, None, :] * transmittance, 1.0 - transmittance


if __name__ == "__main__":  # `python -m gslrm.render.compiled`: build ahead of time (make install runs it)
    try:
        print(f"compiled rasterizer: {build()}")
    except RuntimeError as error:
        print(f"compiled rasterizer not built ({error}); rendering on CPU will use the torch path")
