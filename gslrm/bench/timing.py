"""What the CPU and GPU benchmarks share: peak memory, median timing, one job per fresh process, the machine's
matmul FLOP peak, the transformer's FLOP count and random Gaussians."""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "FORWARD_FLOPS_PER_PAIR",
    "MODEL_SIZES",
    "PeakMemory",
    "rss_kib",
    "timed",
    "random_gaussians",
    "model_flops",
    "job_matmul",
    "run_job",
]

# FLOPs (an FMA counted as 2) per Gaussian-pixel pair in the compiled forward: offsets and sigma 9, exp 22 (range
# reduction, degree-7 polynomial, exponent scaling), alpha, transmittance and weight 6, four channels blended 8
FORWARD_FLOPS_PER_PAIR = 45
MODEL_SIZES = {"tiny": dict(dim=128, depth=4, head_dim=32), "small": dict(dim=384, depth=8, head_dim=64)}


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class PeakMemory:
    """Peak memory (MiB) of the code run inside the context, above what was resident when it started."""

    def __init__(self, device: str) -> None:
        self.device, self.mib = device, 0.0

    def __enter__(self) -> PeakMemory:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.base = rss_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = rss_kib("VmHWM") * 1024
        self.mib = (peak - self.base) / 2**20


def timed(function, device: str, repeats: int) -> tuple[float, float]:
    """Peak memory of the first run, then the median seconds of ``repeats`` more runs."""
    import torch

    with PeakMemory(device) as peak:  # the first call: later ones reuse the allocator's memory and show no growth
        function()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2], peak.mib


def random_gaussians(n: int, device: str, batch: int = 1):
    import torch

    from gslrm.model.gaussians import Gaussians

    g = torch.Generator().manual_seed(0)
    scene = Gaussians(
        means=(torch.rand(batch, n, 3, generator=g) * 2 - 1) * 0.8,
        features=torch.randn(batch, n, 1, 3, generator=g),
        scales=torch.exp(torch.empty(batch, n, 3).uniform_(-5.0, -3.0, generator=g)),
        quats=torch.nn.functional.normalize(torch.randn(batch, n, 4, generator=g), dim=-1),
        opacities=torch.rand(batch, n, generator=g),
    )
    return scene.map(lambda t: t.to(device).requires_grad_(True))


def model_flops(config, tokens: int, batch: int) -> float:
    """Forward+backward FLOPs of the transformer trunk and heads: 3 x forward, forward = 2 x MACs."""
    d, depth = config.dim, config.depth
    per_token_macs = depth * 12 * d * d + 9 * config.patch_size**2 * d + d * config.patch_size**2 * 14
    attention_macs = depth * 2 * tokens * tokens * d  # QK^T and AV
    return 3.0 * 2.0 * batch * (per_token_macs * tokens + attention_macs)


def job_matmul(device: str, size: int = 2048, dtype: str = "float32") -> dict:
    """The machine's matmul FLOP/s: the peak that MFU and FLOP fractions are measured against."""
    import torch

    kind = getattr(torch, dtype)
    a, b = (torch.randn(size, size, device=device, dtype=kind) for _ in range(2))
    seconds, _ = timed(lambda: a @ b, device, 5)
    return {"flops_per_second": 2.0 * size**3 / seconds, "dtype": dtype}


def _child(queue, job: Callable, args: tuple) -> None:
    try:
        queue.put(("ok", job(*args)))
    except BaseException as error:  # noqa: BLE001 - reported to the parent
        queue.put(("error", f"{type(error).__name__}: {error}"))


def run_job(job: Callable, *args):
    """Run one job (a module-level function: spawn pickles it by name) in a fresh process (non-daemonic: it may
    start DataLoader workers), for clean peak memory."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, job, args))
    process.start()
    status, value = queue.get()
    process.join()
    if status != "ok":
        raise RuntimeError(f"bench job {job.__name__}{args} failed: {value}")
    return value
