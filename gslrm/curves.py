"""``python -m gslrm.curves RUN_DIR [RUN_DIR ...] --out curves.png``: validation metrics against wall-clock minutes,
several runs in one figure, so that recipes are compared at equal compute.

Each run directory's ``curve.csv`` (written by ``callbacks.curve``, gslrm/lit/curve.py) gives the points. A run is
labelled by its directory name, or ``--label NAME`` per run. Also prints each run's last row and the share of its
wall time spent validating.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from gslrm.lit.curve import CURVE_FILE

__all__ = ["read_curve", "plot_curves", "PANELS"]

# the metrics the issue of quality per compute judges a recipe by (eval.py's names without the val/ prefix)
PANELS = (
    ("val/opacity_iou_novel", "opacity IoU (novel views)"),
    ("val/psnr_masked_novel", "foreground PSNR (novel views)"),
    ("val/psnr_input", "PSNR (input views)"),
    ("val/psnr_novel", "PSNR (novel views)"),
)


def read_curve(run: Path) -> list[dict[str, float]]:
    path = Path(run) / CURVE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (a run trained with callbacks.curve.enabled=true writes it)")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path}: no validation yet")
    return [{key: float(value) if value not in ("", None) else math.nan for key, value in row.items()} for row in rows]


def plot_curves(runs: dict[str, list[dict[str, float]]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4))
    for axis, (key, title) in zip(axes, PANELS, strict=True):
        for label, rows in runs.items():
            points = [(row["wall_s"] / 60, row[key]) for row in rows if math.isfinite(row.get(key, math.nan))]
            if points:
                axis.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("wall-clock minutes (validation included)")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gslrm.curves", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (outputs/train/runs/<time>)")
    parser.add_argument("--label", action="append", default=None, help="a name per run, in order")
    parser.add_argument("--out", type=Path, default=Path("curves.png"))
    args = parser.parse_args(argv)
    labels = args.label or [run.name for run in args.runs]
    if len(labels) != len(args.runs):
        raise SystemExit(f"--label: {len(labels)} labels for {len(args.runs)} runs")
    try:
        runs = {label: read_curve(run) for label, run in zip(labels, args.runs, strict=True)}
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(str(error)) from None
    for label, rows in runs.items():
        last = rows[-1]
        shown = ", ".join(f"{key.removeprefix('val/')} {last.get(key, math.nan):.3f}" for key, _ in PANELS)
        share = last["val_s"] / last["wall_s"] if last["wall_s"] > 0 else math.nan
        print(f"{label}: step {int(last['step'])}, {last['wall_s'] / 60:.1f} min ({share:.0%} validating): {shown}")
    print(plot_curves(runs, args.out))


if __name__ == "__main__":
    main()
