"""Decoded images kept in memory give the same batches as reading the files every epoch."""
from __future__ import annotations

import shutil

import numpy as np
import torch

from slimcv.data import load_data, make_loader
from slimcv.data.memory import file_dataset, keep_in_memory


def _folder(root, files, n=12, h=24, w=32):
    for i in range(n):
        files.rgb(root / "images" / f"{i:03d}.png", files.random_image(h, w, seed=i))
        files.mask(root / "masks" / f"{i:03d}.png", np.random.default_rng(100 + i).integers(0, 3, (h, w)))
    return root


def _batches(data, workers=0, epoch=0):
    loader = make_loader(data.train, 4, train=True, workers=workers, seed=3, ignore_index=255)
    loader.sampler.set_epoch(epoch)
    torch.manual_seed(7)
    return list(loader)


def _spec(root):
    return {"spec": f"folder:{root}", "size": [16, 16], "augment": ["scale_crop", "rotate", "hflip"],
            "options": {"num_classes": 3}}


def test_memory_store_gives_the_same_batches_as_disk(tmp_path, files):
    root = _folder(tmp_path / "ds", files)
    from_disk = {w: _batches(load_data(_spec(root)), workers=w) for w in (0, 2)}
    data = load_data(_spec(root))
    assert keep_in_memory(data.train, progress=False)
    shutil.rmtree(root)  # every sample now comes from memory: nothing is read from disk
    for workers in (0, 2):  # workers forked after the decoding read the same store
        cached = _batches(data, workers=workers)
        assert len(cached) == len(from_disk[workers]) == 3
        for (xa, ya), (xb, yb) in zip(from_disk[workers], cached):
            assert torch.equal(xa, xb) and torch.equal(ya, yb) and ya.dtype == yb.dtype == torch.int64


def test_memory_store_is_one_narrow_tensor_per_field(tmp_path, files):
    data = load_data(_spec(_folder(tmp_path / "ds", files)))
    assert keep_in_memory(data.train, progress=False)
    store = data.train.decoded
    assert store.images.shape == (12, 3, 24, 32) and store.images.dtype == torch.uint8
    assert store.targets.shape == (12, 24, 32) and store.targets.dtype == torch.uint8  # int64 masks stored as uint8
    image, mask = data.train.load(5)
    assert mask.dtype == torch.int64 and type(mask).__name__ == "Mask" and type(image).__name__ == "Image"


def test_subset_keeps_only_its_samples_and_classification_labels_stay_ints(tmp_path, files):
    for c in ("cat", "dog"):
        for i in range(6):
            files.rgb(tmp_path / "cls" / c / f"{i}.png", files.random_image(8, 8, seed=i + (c == "dog") * 10))
    spec = {"spec": f"imagefolder:{tmp_path / 'cls'}", "size": 8, "subset": 6,
            "options": {"val_per_class": 2}}
    ref = load_data(spec)
    ref_samples = [ref.train.dataset.load(i) for i in ref.train.indices]
    data = load_data(spec)
    assert keep_in_memory(data.train, progress=False)
    base, indices = file_dataset(data.train)
    assert len(base.decoded.positions) == 6 and set(base.decoded.positions) == set(indices)
    for i, (image, label) in zip(indices, ref_samples):
        got_image, got_label = base.load(i)
        assert torch.equal(got_image, image) and got_label == label and isinstance(got_label, int)


def test_too_large_for_the_memory_limit_reads_from_disk(tmp_path, files):
    data = load_data(_spec(_folder(tmp_path / "ds", files)))
    assert not keep_in_memory(data.train, max_bytes=1000, progress=False)
    assert data.train.decoded is None


def test_datasets_without_files_are_left_alone():
    data = load_data("synthetic-shapes")
    assert not keep_in_memory(data.train, progress=False)
