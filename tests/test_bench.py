"""The benchmarks' code paths (their figures are measured by `python -m gslrm.bench`, never asserted as timings)."""

import math

import pytest
import torch
from spawned_jobs import double

from gslrm.bench import cpu, timing
from gslrm.bench import gpu as bench_gpu
from gslrm.bench.__main__ import main


@pytest.mark.slow  # a spawned Python
def test_run_job_runs_each_job_in_a_fresh_process_and_names_a_failure():
    import os

    result = timing.run_job(double, 21)
    assert result["value"] == 42 and result["pid"] != os.getpid()
    with pytest.raises(RuntimeError, match=r"bench job double\(-1,\) failed: ValueError: no shape of size -1"):
        timing.run_job(double, -1)


@pytest.mark.slow
def test_gpu_benchmark_runs_its_code_on_cpu(monkeypatch, tmp_path):
    """`--device cuda`'s jobs with the quick shapes on CPU: every section filled, MFU and the loader ratio derived
    from the measured numbers. In this process (run_job's spawn: the test above): the jobs' code is under test."""
    monkeypatch.setattr(timing, "run_job", lambda job, *args: job(*args))
    reported = []
    results = bench_gpu.run("cpu", quick=True, rodent_root=str(tmp_path / "rodent"), progress=reported.append)
    assert (tmp_path / "rodent" / "manifest.json").is_file()  # the dataset is made where it was asked for
    # after each job (the training, rasterizer and memory jobs, 2 loaders, 2 predict runs), the results so far
    assert len(reported) == 1 + 1 + 2 + 2 + 2 and all(r is results for r in reported)
    step = results["training"]["tiny_32"]
    assert step["seconds"] > 0 and step["steps_per_second"] == pytest.approx(1 / step["seconds"])
    assert step["mfu"] == pytest.approx(step["flops"] / step["seconds"] / results["matmul_peak"]["flops_per_second"])
    assert 0 < step["mfu"] < 1
    assert results["rasterizer"]["2000_32"]["seconds"] > 0
    plain, deferred = results["memory"]["views2_res32_plain"], results["memory"]["views2_res32_deferred"]
    assert plain["deferred"] is False and deferred["deferred"] is True
    assert results["predict"]["batch_size"] == 1 and results["predict_batch16"]["batch_size"] == 16
    assert results["predict_batch16"]["frames"] == results["predict"]["frames"] > 0
    consumption = results["loader"]["consumption_samples_per_second"]
    assert consumption == pytest.approx(2 / step["seconds"])
    for workers in (0, 2):
        loader = results["loader"][f"workers{workers}"]
        assert loader["ratio_to_consumption"] == pytest.approx(loader["samples_per_second"] / consumption)
    text = bench_gpu.table(results)
    assert "| tiny_32 |" in text and "| views2_res32_deferred |" in text and "| workers2 |" in text
    assert all(math.isfinite(v["seconds"]) for v in results["memory"].values())


@pytest.mark.slow
def test_cpu_benchmark_quick_run_fills_every_section(monkeypatch):
    """`python -m gslrm.bench --quick`'s jobs and the table. In this process (run_job's spawn has its own test): the
    jobs' code is what is under test."""
    monkeypatch.setattr(timing, "run_job", lambda job, *args: job(*args))
    results = cpu.run(quick=True)
    raster = results["rasterizer"]
    assert raster["compiled_speedup_2k_64"] > 1 and raster["compiled_max_abs_diff"] < 1e-4
    # a ratio of two timings: only its sign is asserted (one repeat on a loaded machine measured 10.4)
    assert raster["render_max_abs_diff"] < 1e-3 and raster["backward_over_forward_2k_64"] > 0
    assert raster["2k_64"]["compiled"]["simd_lanes"] >= 1 and "SIMD lanes" in cpu.table(results)
    assert set(raster["2k_64"]) == {"compiled", "tiled", "dense", "max_abs_diff"}
    tiny = results["model"]["tiny"]
    assert tiny["mfu"] == pytest.approx(tiny["flops"] / tiny["seconds"] / results["model"]["matmul_flops_per_second"])
    assert set(results["loader"]) == {"workers0", "workers2"}
    assert set(results["memory"]) == {f"views{v}_res64_{what}" for v in (2, 4) for what in ("model", "render")}
    step = results["step"]["res32"]  # a real train.py run with callbacks.step_times
    assert step["steps"] == 5 and step["step_seconds"] == pytest.approx(sum(step["seconds"].values()))
    assert all(value >= 0 for value in step["seconds"].values()) and step["seconds"]["render_backward"] > 0
    assert results["step"]["render_share_32"] == step["render_share"] and 0 < step["render_share"] < 1
    text = cpu.table(results)
    assert "| 32 px |" in text
    predicted = results["predict"]  # predict.py over the quick dataset's every sample, initial weights
    assert predicted["frames"] == 8 and predicted["frames_per_second"] > 0 and predicted["image_size"] == 64
    assert predicted["stage_seconds_per_frame"]["model"] > 0 and predicted["kept_per_frame"] > 0
    assert predicted["bytes_per_frame"] == pytest.approx(predicted["bytes_per_gaussian"] * predicted["kept_per_frame"])
    assert predicted["session_hours"] == pytest.approx(18_000 / predicted["frames_per_second"] / 3600)
    assert "bytes/frame" in text
    assert "| 2k_64 |" in text and "| tiny " in text and "| workers2 |" in text and "| views4_res64_render |" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_benchmark_without_cuda_says_so():
    with pytest.raises(SystemExit, match="no CUDA device here"):
        main(["--device", "cuda"])


def test_gpu_check_stops_a_stage_at_its_limit_with_its_children(tmp_path):
    import os
    import sys
    import time

    from gslrm.bench.gpu_check import run_stage

    child = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(child)!r}, 'w').write(str(p.pid)); print('started', flush=True); time.sleep(60)"
    )
    outcome = run_stage([sys.executable, "-c", script], tmp_path / "stage.log", 3.0, dict(os.environ))
    assert outcome["timed_out"] and outcome["returncode"] != 0 and 3.0 <= outcome["seconds"] < 20
    assert (tmp_path / "stage.log").read_text() == "started\n"
    pid = int(child.read_text())
    for _ in range(50):  # the grandchild got SIGKILL with its group; it is gone once its parent (init) reaps it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the stage's child {pid} outlived the stage's limit")


def test_gpu_check_refuses_unknown_stages_and_limits(tmp_path):
    from gslrm.bench.gpu_check import main as gpu_check

    with pytest.raises(SystemExit, match="--stages: unknown tset"):
        gpu_check(["--out", str(tmp_path), "--stages", "setup,tset"])
    for bad in ("tests", "tests=soon", "tset=60", "bench=0"):
        with pytest.raises(SystemExit, match=f"--limits: '{bad}' is not STAGE=SECONDS"):
            gpu_check(["--out", str(tmp_path), "--limits", bad])


@pytest.mark.slow  # starts Python processes
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without CUDA reports")
def test_gpu_check_without_cuda_reports_each_stage(tmp_path):
    import json

    from gslrm.bench.gpu_check import main as gpu_check

    out = tmp_path / "out"
    code = gpu_check(["--out", str(out), "--stages", "setup,bench", "--rodent-root", str(tmp_path / "none")])
    summary = json.loads((out / "summary.json").read_text())["stages"]
    assert code == 1 and list(summary) == ["setup", "bench"]
    assert summary["setup"]["returncode"] == 0 and "no GPU here: nothing to build" in (out / "setup.log").read_text()
    assert summary["bench"]["returncode"] == 1 and not summary["bench"]["timed_out"]
    assert "no CUDA device here" in (out / "bench.log").read_text()
