"""callbacks.curve's curve.csv (each validation with its wall-clock time) and ``python -m gslrm.curves``."""

from __future__ import annotations

import csv

import pytest

from gslrm.curves import PANELS, main


def test_a_training_run_writes_its_curve_and_two_runs_plot_in_one_figure(trained_run, tmp_path, capsys):
    """The session's trained run (4 steps, validation at steps 0, 2, 4): one row per validation, the clock rising,
    the validating share inside it, the view-set metrics the figure plots; two runs in one figure."""
    with open(trained_run / "curve.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["step"]) for row in rows] == [0, 2, 4]
    walls = [float(row["wall_s"]) for row in rows]
    assert walls == sorted(walls) and walls[0] > 0
    for row in rows:
        assert 0 < float(row["val_s"]) <= float(row["wall_s"])
        assert float(row["train_s"]) == pytest.approx(float(row["wall_s"]) - float(row["val_s"]))
        assert all(row[key] != "" for key, _ in PANELS)
        assert 0 <= float(row["val/opacity_iou_novel"]) <= 1
    out = tmp_path / "curves.png"
    main([str(trained_run), str(trained_run), "--label", "a", "--label", "b", "--out", str(out)])
    printed = capsys.readouterr().out
    assert out.is_file() and out.stat().st_size > 10_000
    assert printed.startswith("a: step 4,") and "validating" in printed and "opacity_iou_novel" in printed
    with pytest.raises(SystemExit, match="curve.csv: not found"):
        main([str(tmp_path), "--out", str(out)])
