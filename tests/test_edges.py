"""python -m gslrm.bench.edges: a checkpoint's foreground error split between the silhouette's band and the inside."""

import math

import pytest
import torch
from test_ceiling import TINY, val_dataset

from gslrm.bench.edges import edge_band, main, score, split_error
from gslrm.model.gslrm import GSLRM, ModelConfig
from gslrm.render import RenderConfig


def test_the_band_is_the_foreground_near_the_background():
    """Known answer: a 5x5 square in a 7x7 image has a 16-pixel ring at band 1 and all but its centre at band 2;
    a square that touches the image border has its border row in the band."""
    mask = torch.zeros(1, 7, 7, dtype=torch.bool)
    mask[0, 1:6, 1:6] = True
    ring = edge_band(mask, 1)[0]
    assert int(ring.sum()) == 16 and not ring[2:5, 2:5].any() and ring[1, 1:6].all()
    wide = edge_band(mask, 2)[0]
    assert int(wide.sum()) == 24 and not wide[3, 3]
    full = torch.ones(1, 4, 4, dtype=torch.bool)
    assert int(edge_band(full, 1).sum()) == 12  # the image's border is background


def test_the_squared_error_splits_by_hand():
    """A 5x5 grey square target; the render is off by 0.5 on the ring and by 0.1 inside: the summed squared errors
    are 16 x 0.25 and 9 x 0.01, and the background pixels count nowhere."""
    alpha = torch.zeros(1, 7, 7)
    alpha[0, 1:6, 1:6] = 1.0
    target = torch.full((1, 3, 7, 7), 0.5)
    rgb = target.clone() + 0.1
    ring = edge_band(alpha > 0.5, 1)
    rgb[:, :, ring[0]] = 1.0
    rgb[:, :, ~(alpha[0] > 0.5)] = 0.0  # background errors are not foreground errors
    edge_se, edge_n, inside_se, inside_n = split_error(rgb, target, alpha, band=1)
    assert (int(edge_n), int(inside_n)) == (16, 9)
    assert math.isclose(float(edge_se), 16 * 0.25, rel_tol=1e-6) and math.isclose(
        float(inside_se), 9 * 0.01, rel_tol=1e-4
    )


def test_scores_a_model_on_the_val_views(rodent_root):
    torch.manual_seed(0)
    model = GSLRM(ModelConfig(**TINY)).eval()
    dataset = val_dataset(rodent_root, load_depth=False)
    split = score(model, dataset, RenderConfig(), samples=8, band=2)
    masks = torch.stack([dataset[i]["image"][4:, 3] > 0.5 for i in range(len(dataset))])
    assert split.edge_pixels + split.interior_pixels == int(masks.sum()) and split.edge_pixels > 0
    assert 0.0 <= split.edge_share <= 1.0
    low, high = sorted([split.psnr_edge, split.psnr_interior])
    assert low <= split.psnr_foreground <= high


def test_the_command_reads_a_training_run_s_checkpoint(trained_run, rodent_root, capsys):
    main([str(trained_run / "checkpoints" / "last.ckpt"), "--data-root", str(rodent_root), "--samples", "1"])
    out = capsys.readouterr().out
    assert "share of the foreground's squared error in the edge band:" in out and "interior" in out


def test_a_wrong_data_root_is_one_line_naming_the_file(trained_run, tmp_path, caplog):
    """The parent of the dataset instead of the dataset: exit 1 and the missing split file's path, no traceback."""
    with pytest.raises(SystemExit) as stopped:
        main([str(trained_run / "checkpoints" / "last.ckpt"), "--data-root", str(tmp_path), "--samples", "1"])
    assert stopped.value.code == 1
    assert f"{tmp_path / 'val.txt'}: split file not found" in caplog.text
