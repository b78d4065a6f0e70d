"""``python -m gslrm.bench [--device cpu|cuda] [--json FILE] [--quick] [--predict-ckpt CKPT]``: the CPU benchmark (gslrm/bench/cpu.py) or
the GPU one (gslrm/bench/gpu.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gslrm.bench", description="speed and memory, measured side by side in one run"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    parser.add_argument("--quick", action="store_true", help="small cases only (a smoke run)")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cpu: the CPU rasterizers, model and loader; cuda: the GPU benchmark (gslrm/bench/gpu.py)",
    )
    parser.add_argument(
        "--predict-ckpt",
        default=None,
        help="the checkpoint predict.py's figures use (e.g. make train's last.ckpt); default: initial weights",
    )
    parser.add_argument(
        "--rodent-root",
        default=None,
        help="--device cuda: the loader's and predict.py's rodent dataset (48 samples, val 4, seed 0), generated "
        "there if missing; default: generated in a scratch folder (needs the rodent extra)",
    )
    args = parser.parse_args(argv)
    if args.device == "cuda":
        from gslrm.bench import gpu

        def progress(results: dict) -> None:  # a run stopped at its time limit keeps what it measured
            if args.json:
                args.json.write_text(json.dumps(results, indent=1))

        results = gpu.run(
            "cuda", quick=args.quick, predict_ckpt=args.predict_ckpt, rodent_root=args.rodent_root, progress=progress
        )
        print(gpu.table(results))
    else:
        from gslrm.bench import cpu

        results = cpu.run(quick=args.quick, predict_ckpt=args.predict_ckpt)
        print(cpu.table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
