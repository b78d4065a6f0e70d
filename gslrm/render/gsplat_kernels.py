"""gsplat's CUDA kernels: built once per environment, one process at a time, or a one-line reason why not.

gsplat 1.5 from PyPI ships CUDA sources, not binaries: its first use on a GPU machine compiles them with nvcc (minutes)
into torch's extension folder. Two pitfalls this module removes:

- Concurrent first uses race. gsplat deletes torch's build lock and, finding no finished library, deletes the build
  folder another process is compiling into, so the DDP ranks or SLURM array jobs of a first sweep kill each other's
  builds. ``ensure_kernels`` takes an exclusive file lock in the extension root around gsplat's build: the first process
  builds, the others wait and then load the finished library.
- Without nvcc gsplat only prints a warning and the first render fails deep inside it on ``None``. Here it is a
  one-line error that says what to install.

``python -m gslrm.render.gsplat_kernels`` (``make gpu-setup``) builds ahead of a sweep and checks the result: a random
scene rendered by gsplat on the GPU against the compiled CPU rasterizer.
"""

from __future__ import annotations

import importlib
import os
import time
from functools import cache
from pathlib import Path

import torch

from gslrm.files import exclusive_lock

__all__ = ["ensure_kernels", "GsplatKernelsUnavailable", "lock_path"]

DOCS = "docs/training.md#gpu-machines"


class GsplatKernelsUnavailable(RuntimeError):
    """gsplat's CUDA kernels are neither installed nor buildable here."""


def lock_path() -> Path:
    """In torch's extension root, outside gsplat's build folder (gsplat deletes that folder before a fresh build)."""
    from torch.utils.cpp_extension import get_default_build_root

    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
    return root / "gsplat_cuda.gslrm.lock"


def _load_backend():
    """Import gsplat's backend module: loads a prebuilt or cached library, else compiles the sources (nvcc)."""
    return importlib.import_module("gsplat.cuda._backend")


def _build_failure(error: Exception) -> str:
    """One line from a failed build: the error's first line, the compiler's first error (torch puts the whole log in
    the message) and the fix for the failures seen so far."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    first = f"{type(error).__name__}: {lines[0] if lines else ''}"
    compiler = next((line for line in lines[1:] if "error:" in line), None)  # gcc's / nvcc's first error
    hints = []
    if not torch.cuda.is_available() and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        hints.append("no GPU is visible to choose the architecture for: set TORCH_CUDA_ARCH_LIST (H100: 9.0)")
    if "cuda_runtime.h" in str(error):
        hints.append(
            "the CUDA headers are not under CUDA_HOME: set CUDA_HOME to the toolkit (e.g. /usr/local/cuda-13.0)"
        )
    detail = f"{first}; {compiler}" if compiler else first
    hint = "".join(f"{h}; " for h in hints)
    return (
        f"gsplat could not build its CUDA kernels ({detail}); {hint}for the compiler's log run "
        f"'VERBOSE=1 python -m gslrm.render.gsplat_kernels' ({DOCS})"
    )


@cache
def ensure_kernels() -> None:
    """Make gsplat's CUDA kernels loadable in this process, or raise ``GsplatKernelsUnavailable`` in one line."""
    cuda = torch.version.cuda or "none (a CPU build of torch)"
    with exclusive_lock(lock_path()):
        try:
            backend = _load_backend()
        except Exception as error:  # nvcc / ninja failures surface as RuntimeError or OSError, with a long log
            raise GsplatKernelsUnavailable(_build_failure(error)) from None
    if getattr(backend, "_C", None) is None:
        raise GsplatKernelsUnavailable(
            f"gsplat's CUDA kernels are not built and no CUDA toolkit (nvcc) was found to build them: install the "
            f"toolkit matching torch's CUDA {cuda} (or set CUDA_HOME), or a prebuilt gsplat wheel, then run "
            f"'python -m gslrm.render.gsplat_kernels' once ({DOCS})"
        )


def _check_against_cpu() -> float:
    """Max difference between gsplat (GPU) and the CPU rasterizer on a random scene: RGB and alpha absolute,
    expected depth relative where alpha > 0.1."""
    from gslrm.cameras import turntable_cameras
    from gslrm.model.gaussians import Gaussians
    from gslrm.render import RenderConfig, render

    g = torch.Generator().manual_seed(0)
    batch, n, size = 2, 4000, 96
    scene = Gaussians(
        means=(torch.rand(batch, n, 3, generator=g) * 2 - 1) * 0.6,
        features=torch.randn(batch, n, 4, 3, generator=g) * 0.5,
        scales=torch.exp(torch.empty(batch, n, 3).uniform_(-4.5, -2.5, generator=g)),
        quats=torch.nn.functional.normalize(torch.randn(batch, n, 4, generator=g), dim=-1),
        opacities=torch.rand(batch, n, generator=g),
    )
    c2w, k = turntable_cameras(4, size, elevation_deg=25.0)
    c2w, k = c2w.expand(batch, -1, -1, -1).clone(), k.expand(batch, -1, -1).clone()
    cpu = render(scene, c2w, k, size, size, settings=RenderConfig(cpu_backend="auto"))  # compiled where g++ is
    gpu = render(scene.map(lambda t: t.cuda()), c2w.cuda(), k.cuda(), size, size)
    covered = cpu.alpha > 0.1  # expected depth divides by alpha
    gaps = [(cpu.rgb - gpu.rgb.cpu()).abs().max(), (cpu.alpha - gpu.alpha.cpu()).abs().max()]
    gaps.append(((cpu.depth - gpu.depth.cpu()).abs() / cpu.depth.abs().clamp_min(1e-6))[covered].max())
    return max(gap.item() for gap in gaps)


def main() -> int:
    """Build (or load) the kernels and, where a GPU is visible, check them against the CPU rasterizer. Without a GPU
    it builds only if ``TORCH_CUDA_ARCH_LIST`` names the target (a login node preparing a shared environment)."""
    gpu = torch.cuda.is_available()
    if not gpu and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        print(
            "no GPU here: nothing to build (the CPU renders with its own rasterizer); to build gsplat's kernels for "
            "GPU nodes from this machine, set TORCH_CUDA_ARCH_LIST (H100/H200: 9.0, A100: 8.0)"
        )
        return 0
    start = time.perf_counter()
    try:
        ensure_kernels()
    except GsplatKernelsUnavailable as error:
        print(f"error: {error}")
        return 1
    print(f"gsplat's CUDA kernels ready in {time.perf_counter() - start:.1f} s (lock: {lock_path()})")
    if not gpu:
        return 0
    gap = _check_against_cpu()
    verdict = "ok" if gap <= 1e-3 else "MISMATCH"
    print(f"{torch.cuda.get_device_name()}: gsplat vs compiled CPU rasterizer, max difference {gap:.2e} ({verdict})")
    return 0 if gap <= 1e-3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
