import numpy as np
import torch

from gslrm.data.datamodule import ViewDataModule
from gslrm.data.dataset import DataConfig, ViewDataset
from gslrm.rig import NormalizationConfig


def test_sample_layout_order_and_normalization(tiny_root):
    from conftest import write_sample

    write_sample(tiny_root, "s0", distance=3.5)  # a rig that needs rescaling
    config = DataConfig(root=str(tiny_root), image_size=16, num_views=6, num_input_views=2, input_views=[3, 1])
    sample = ViewDataset(config, "train")[0]
    assert sample["image"].shape == (6, 4, 16, 16) and sample["image"].dtype == torch.float32
    assert sample["c2w"].shape == (6, 4, 4) and sample["fxfycxcy"].shape == (6, 4)
    # inputs first, then the other targets in stored order; (frame index, sample index)
    assert sample["index"][:, 0].tolist() == [3, 1, 0, 2, 4, 5] and (sample["index"][:, 1] == 0).all()
    assert torch.allclose(sample["bg_color"], torch.ones(3))
    distances = sample["c2w"][:, :3, 3].norm(dim=-1)
    assert torch.allclose(distances, torch.full((6,), 2.7), atol=1e-5)
    assert 0.0 <= sample["image"].min() and sample["image"].max() <= 1.0
    # auto-mask of the dark square: 16x16 raw pixels in a 32x32 crop -> a quarter of the image
    assert abs(sample["image"][0, 3].mean().item() - 0.25) < 0.03


def test_default_views_are_fixed_and_first_are_inputs(tiny_root):
    dataset = ViewDataset(DataConfig(root=str(tiny_root), image_size=8, num_input_views=4), "val")
    first, second = dataset[0], dataset[0]
    assert first["index"][:, 0].tolist() == [0, 1, 2, 3, 4, 5]
    assert torch.equal(first["image"], second["image"])


def test_random_view_selection_only_behind_flag(tiny_root):
    config = DataConfig(root=str(tiny_root), image_size=8, num_input_views=2, random_view_selection=True)
    dataset = ViewDataset(config, "train")
    orders = {tuple(dataset[0]["index"][:2, 0].tolist()) for _ in range(20)}
    assert len(orders) > 1
    validation = ViewDataset(config, "val")  # scored on the fixed inputs, as eval.py scores
    assert {tuple(validation[0]["index"][:, 0].tolist()) for _ in range(5)} == {(0, 1, 2, 3, 4, 5)}


def test_depth_is_cropped_and_scaled_with_the_rig(tiny_root):
    for view in range(6):
        depth = np.zeros((32, 36), np.float32)
        depth[8:24, 10:26] = 2.0
        (tiny_root / "s0" / "depth").mkdir(exist_ok=True)
        np.save(tiny_root / "s0" / "depth" / f"cam_{view:03d}.npy", depth)
    config = DataConfig(
        root=str(tiny_root), image_size=16, load_depth=True, normalization=NormalizationConfig(target_distance=5.4)
    )
    sample = ViewDataset(config, "train")[0]
    assert sample["depth"].shape == (6, 1, 16, 16)
    assert set(np.unique(sample["depth"].numpy()).round(5)) == {0.0, 4.0}  # 2.0 x (5.4 / 2.7)


def test_supervision_views_are_appended_as_targets_of_train_samples_only(tiny_root):
    """data.supervision_views: that many views drawn anew from <sample>/supervision/ follow the rig's six, normalized
    by the rig's transform (a supervision frame placed where rig frame i is lands exactly where it does), with their
    depth; validation never gets them."""
    import pytest
    from conftest import write_sample

    from gslrm.data.format import DataFormatError

    for index in range(4):
        write_sample(tiny_root / f"s{index}", "supervision", distance=3.5 if index == 0 else 2.7)
    write_sample(tiny_root, "s0", distance=3.5)  # the rig and its supervision views both need rescaling
    for folder in (tiny_root / "s0", tiny_root / "s0" / "supervision"):
        (folder / "depth").mkdir(exist_ok=True)
        for view in range(6):
            depth = np.zeros((32, 36), np.float32)
            depth[8:24, 10:26] = 3.5
            np.save(folder / "depth" / f"cam_{view:03d}.npy", depth)
    config = DataConfig(root=str(tiny_root), image_size=16, supervision_views=2, load_depth=True)
    dataset = ViewDataset(config, "train")
    sample = dataset[0]
    assert sample["image"].shape == (8, 4, 16, 16) and sample["c2w"].shape == (8, 4, 4)
    assert sample["fxfycxcy"].shape == (8, 4) and sample["depth"].shape == (8, 1, 16, 16)
    frames = [-1 - int(i) for i in sample["index"][6:, 0]]
    assert sample["index"][:6, 0].tolist() == [0, 1, 2, 3, 4, 5] and len(set(frames)) == 2
    assert (sample["index"][:, 1] == 0).all()
    assert all("/s0/supervision/images/cam_" in name for name in sample["names"][6:])
    for slot, frame in zip((6, 7), frames, strict=True):
        assert torch.allclose(sample["c2w"][slot], sample["c2w"][frame], atol=1e-6)
        assert torch.equal(sample["fxfycxcy"][slot], sample["fxfycxcy"][frame])
        assert torch.equal(sample["image"][slot, 3], sample["image"][frame, 3])
    assert np.allclose(np.unique(sample["depth"][6:].numpy()), [0.0, 2.7])  # 3.5 x (2.7 / 3.5)
    assert len({tuple(dataset[0]["index"][6:, 0].tolist()) for _ in range(20)}) > 1  # drawn anew
    without_depth = DataConfig(root=str(tiny_root), image_size=16, supervision_views=2)
    assert ViewDataset(without_depth, "val")[0]["image"].shape[0] == 6

    (tiny_root / "s1" / "supervision" / "opencv_cameras.json").unlink()
    with pytest.raises(
        DataFormatError, match=r"s1/supervision/opencv_cameras.json: file not found \(data.supervision_views=2\)"
    ):
        ViewDataset(without_depth, "train")[1]
    few = DataConfig(root=str(tiny_root), image_size=16, supervision_views=7)
    with pytest.raises(
        DataFormatError,
        match=r"s2/supervision/opencv_cameras.json: frames: 6 views, fewer than data.supervision_views=7",
    ):
        ViewDataset(few, "train")[2]
    with pytest.raises(ValueError, match="data.supervision_views: must be >= 0"):
        DataConfig(supervision_views=-1)


def test_datamodule_batches(tiny_root):
    config = DataConfig(root=str(tiny_root), image_size=16, batch_size=2, num_workers=0)
    datamodule = ViewDataModule(config)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape == (2, 6, 4, 16, 16) and batch["c2w"].shape == (2, 6, 4, 4)
    assert batch["index"].shape == (2, 6, 2) and batch["bg_color"].shape == (2, 3)
    assert batch["num_skipped"].item() == 0
    assert len(datamodule.val_dataloader()) == 1


def test_supervision_views_beyond_the_generated_ones_stop_at_start(tmp_path):
    """data.supervision_views asks for more than the rodent generator is set to render: one line before anything
    is generated, naming both keys."""
    import pytest

    from gslrm.data.format import DataFormatError

    config = DataConfig(root=str(tmp_path / "rodent"), generate=True, generator={"samples": 2}, supervision_views=2)
    with pytest.raises(DataFormatError, match=r"data.supervision_views=2: the generated dataset has 0 .*generator"):
        ViewDataModule(config).prepare_data()
    assert not (tmp_path / "rodent").exists()


def test_the_cache_serves_a_read_sample_from_memory_as_read(tiny_root, monkeypatch):
    """data.cache_mb: a train/val sample is read from disk once; what comes back later equals what was read, and
    popping a key of a served sample (collate_views pops the names) leaves the cached one whole."""
    import gslrm.data.dataset as dataset_module

    config = DataConfig(root=str(tiny_root), image_size=16, batch_size=3, num_workers=0)
    datamodule = ViewDataModule(config)
    datamodule.setup("fit")
    reads = []
    load_rgba = dataset_module.load_rgba
    monkeypatch.setattr(dataset_module, "load_rgba", lambda *args: reads.append(args[0]) or load_rgba(*args))
    epochs = [next(iter(datamodule.train_dataloader())) for _ in range(3)]
    assert len(reads) == 3 * 6  # three samples of six views, read in the first epoch only
    for batch in epochs[1:]:  # the same three samples (a shuffled order), equal to what the first epoch read
        order = batch["index"][:, 0, 1].argsort()
        first = epochs[0]["index"][:, 0, 1].argsort()
        assert torch.equal(batch["image"][order], epochs[0]["image"][first])
        assert [batch["names"][i] for i in order] == [epochs[0]["names"][i] for i in first]
    train = datamodule.dataset("train")
    assert (train.cache.hits, train.cache.misses) == (6, 3)
    assert train.cache.used_bytes == 3 * sum(
        value.numel() * value.element_size() for value in train[0].values() if isinstance(value, torch.Tensor)
    )
    fresh = ViewDataset(config, "train")  # no cache unless asked (predict.py reads each frame once)
    assert torch.equal(fresh[1]["image"], train[1]["image"]) and fresh.cache.capacity_bytes == 0


def test_the_cache_keeps_what_fits_and_never_keeps_random_draws(tiny_root):
    one = ViewDataset(DataConfig(root=str(tiny_root), image_size=16), "train", cache_mb=0.0)
    size = sum(value.nbytes for value in one[0].values() if isinstance(value, torch.Tensor))
    capped = ViewDataset(DataConfig(root=str(tiny_root), image_size=16), "train", cache_mb=1.5 * size / 2**20)
    for index in (0, 1, 2, 0, 1):
        capped[index]
    assert len(capped.cache.samples) == 1 and capped.cache.used_bytes == size  # the first one fits, then full
    assert (capped.cache.hits, capped.cache.misses) == (1, 4)
    drawn = DataConfig(root=str(tiny_root), image_size=16, num_input_views=2, random_view_selection=True)
    dataset = ViewDataset(drawn, "train", cache_mb=64.0)
    assert len({tuple(dataset[0]["index"][:2, 0].tolist()) for _ in range(20)}) > 1  # drawn anew every time
    assert dataset.cache.capacity_bytes == 0
    assert ViewDataset(drawn, "val", cache_mb=64.0).cache.capacity_bytes > 0  # validation's inputs are fixed
    import pytest

    with pytest.raises(ValueError, match=r"data.cache_mb: must be >= 0"):
        DataConfig(cache_mb=-1)
