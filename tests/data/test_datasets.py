"""Dataset loaders: real CamVid/CIFAR-10 (data mark), tiny Cityscapes/VOC/folder trees, synthetic shapes."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Subset
from torchvision import tv_tensors

from slimcv.data import build_dataset, list_datasets, load_data
from slimcv.errors import SlimcvError

CAMVID_VALUES = set(range(11)) | {255}


def _base(ds):
    return ds.dataset if isinstance(ds, Subset) else ds


def test_all_documented_specs_are_registered():
    assert {"camvid", "cityscapes", "voc", "folder", "imagefolder", "cifar10", "synthetic-shapes"} <= set(
        list_datasets())


# ---------------------------------------------------------------- real CamVid


@pytest.mark.data
def test_camvid_real_split_sizes_and_sample_types(real_camvid):
    bundle = load_data({"spec": f"camvid:{real_camvid}", "size": [176, 240]})
    assert (len(bundle.train), len(bundle.val)) == (367, 101)
    assert bundle.task == "segmentation" and bundle.num_classes == 11
    assert bundle.info.ignore_index == 255

    image, mask = bundle.train[0]
    assert type(image) is torch.Tensor and type(mask) is torch.Tensor  # ToPureTensor: no tv_tensors leak out
    assert image.shape == (3, 176, 240) and image.dtype == torch.float32
    assert mask.shape == (176, 240) and mask.dtype == torch.int64
    assert set(mask.unique().tolist()) <= CAMVID_VALUES
    assert (mask != 255).any()


@pytest.mark.data
def test_camvid_real_val_mask_keeps_native_resolution(real_camvid):
    bundle = load_data({"spec": f"camvid:{real_camvid}", "size": [176, 240]})
    image, mask = bundle.val[0]
    assert image.shape == (3, 176, 240) and image.dtype == torch.float32  # eval_size defaults to size
    assert mask.shape == (360, 480) and mask.dtype == torch.int64
    assert set(mask.unique().tolist()) <= CAMVID_VALUES


@pytest.mark.data
def test_camvid_real_void_becomes_ignore(real_camvid):
    ds = build_dataset(f"camvid:{real_camvid}", "train")
    raw = np.asarray(Image.open(ds.pairs[0][1]))
    assert (raw == 11).any(), "expected the first CamVid mask to hold void pixels"
    image, mask = ds.load(0)
    assert image.dtype == torch.uint8 and image.shape == (3, 360, 480)
    mask = mask.numpy()
    assert (mask[raw == 11] == 255).all()
    np.testing.assert_array_equal(mask[raw < 11], raw[raw < 11])


# ---------------------------------------------------------------- real CIFAR-10


@pytest.fixture(scope="module")
def cifar_bundles(real_cifar10):
    # Scanning 50,000 files takes about a second: build once per module, plus one independent val build.
    return real_cifar10, load_data(f"cifar10:{real_cifar10}"), build_dataset(f"cifar10:{real_cifar10}", "val")


def _files(ds):
    return [(str(p), label) for p, label in _base(ds).samples]


@pytest.mark.data
def test_cifar10_real_holdout_sizes(cifar_bundles):
    _, bundle, _ = cifar_bundles
    assert (len(bundle.train), len(bundle.val)) == (45000, 5000)
    assert bundle.task == "classification" and bundle.num_classes == 10
    assert bundle.info.class_names[:3] == ("airplane", "automobile", "bird")
    image, label = bundle.train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert isinstance(label, int) and 0 <= label < 10


@pytest.mark.data
def test_cifar10_real_val_is_stratified_deterministic_and_disjoint(cifar_bundles):
    _, a, val_again = cifar_bundles
    val_labels = Counter(label for _, label in _files(a.val))
    assert val_labels == {c: 500 for c in range(10)}
    assert Counter(label for _, label in _files(a.train)) == {c: 4500 for c in range(10)}
    assert _files(a.val) == _files(val_again)  # a second, independent build holds out the same files
    assert not {p for p, _ in _files(a.val)} & {p for p, _ in _files(a.train)}


@pytest.mark.data
def test_cifar10_real_train_folder_spec_gives_same_split(cifar_bundles):
    root, a, _ = cifar_bundles
    c = load_data(f"cifar10:{root / 'train'}")
    assert _files(c.val) == _files(a.val)
    assert _files(c.train) == _files(a.train)


@pytest.mark.data
def test_cifar10_real_other_seed_gives_other_val(cifar_bundles):
    root, a, _ = cifar_bundles
    other = build_dataset(f"cifar10:{root}", "val", seed=1)
    assert len(other) == 5000
    assert _files(other) != _files(a.val)


# ---------------------------------------------------------------- Cityscapes


def _cityscapes_tree(root: Path, files, label_ids: np.ndarray, split: str = "train") -> Path:
    h, w = label_ids.shape
    files.rgb(root / "leftImg8bit" / split / "aachen" / "a_leftImg8bit.png", files.random_image(h, w))
    files.mask(root / "gtFine" / split / "aachen" / "a_gtFine_labelIds.png", label_ids)
    return root


def test_cityscapes_label_ids_map_to_train_ids(tmp_path, files):
    label_ids = np.array([[7, 26, 0, 8], [33, 1, 255, 24]], dtype=np.uint8)
    root = _cityscapes_tree(tmp_path / "cityscapes", files, label_ids)
    ds = build_dataset(f"cityscapes:{root}", "train")
    assert len(ds) == 1 and ds.info.num_classes == 19
    image, mask = ds.load(0)
    assert image.shape == (3, 2, 4)
    expected = np.array([[0, 13, 255, 1], [18, 255, 255, 11]])
    np.testing.assert_array_equal(mask.numpy(), expected)
    assert mask.dtype == torch.int64


def test_cityscapes_missing_split_folder(tmp_path, files):
    root = _cityscapes_tree(tmp_path / "cityscapes", files, np.zeros((2, 2), np.uint8))
    with pytest.raises(SlimcvError, match=r"leftImg8bit[/\\]val"):
        build_dataset(f"cityscapes:{root}", "val")


# ---------------------------------------------------------------- VOC


def _voc_tree(root: Path, files, masks: dict[str, np.ndarray], split: str = "train") -> Path:
    from slimcv.data.segmentation import VOC_INFO

    palette = [c for rgb in VOC_INFO.palette for c in rgb]
    palette += [0] * (3 * 256 - len(palette))
    palette[3 * 255: 3 * 256] = [224, 224, 192]  # VOC's border colour
    for stem, mask in masks.items():
        h, w = mask.shape
        files.rgb(root / "JPEGImages" / f"{stem}.jpg", files.random_image(h, w))
        im = Image.fromarray(mask.astype(np.uint8), mode="P")
        im.putpalette(palette)
        (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        im.save(root / "SegmentationClass" / f"{stem}.png")
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("\n".join(masks) + "\n")
    return root


def _bordered(h: int, w: int, cls: int) -> np.ndarray:
    mask = np.full((h, w), 255, np.uint8)
    mask[1:-1, 1:-1] = 0
    mask[2:-2, 2:5] = cls
    return mask


def test_voc_palette_png_keeps_border_and_classes(tmp_path, files):
    masks = {"2007_000001": _bordered(10, 12, 15), "2007_000002": _bordered(8, 9, 20)}
    root = _voc_tree(tmp_path / "voc", files, masks)
    assert Image.open(root / "SegmentationClass" / "2007_000001.png").mode == "P"
    ds = build_dataset(f"voc:{root}", "train")
    assert len(ds) == 2 and ds.info.num_classes == 21
    for i, expected in enumerate(masks.values()):
        image, mask = ds.load(i)
        assert image.shape == (3, *expected.shape)
        np.testing.assert_array_equal(mask.numpy(), expected.astype(np.int64))
    assert ds.load(0)[1][0, 0] == 255 and ds.load(0)[1][4, 3] == 15


def test_voc_finds_nested_voc2012_folder(tmp_path, files):
    _voc_tree(tmp_path / "VOCdevkit" / "VOC2012", files, {"a": _bordered(8, 8, 3)})
    ds = build_dataset(f"voc:{tmp_path / 'VOCdevkit'}", "train")
    assert len(ds) == 1 and int(ds.load(0)[1][3, 3]) == 3


# ---------------------------------------------------------------- folder


def test_folder_pairs_by_stem_with_num_classes(tmp_path, files):
    root = tmp_path / "folder"
    masks = {"b": np.array([[0, 1], [2, 255]]), "a": np.array([[2, 2], [1, 0]])}
    for stem, mask in masks.items():
        files.rgb(root / "images" / f"{stem}.jpg", files.random_image(2, 2))
        files.mask(root / "masks" / f"{stem}.png", mask)
    ds = build_dataset(f"folder:{root}", num_classes=3)
    assert ds.info.num_classes == 3 and ds.info.class_names == ("class0", "class1", "class2")
    assert [img.stem for img, _ in ds.pairs] == ["a", "b"]
    for (img, mask_path), (_, mask) in zip(ds.pairs, (ds.load(0), ds.load(1))):
        assert img.stem == mask_path.stem
        np.testing.assert_array_equal(mask.numpy(), masks[img.stem])


def test_folder_split_subfolders_and_class_names(tmp_path, files):
    for split, n in (("train", 3), ("val", 1)):
        for i in range(n):
            files.rgb(tmp_path / split / "images" / f"{i}.png", files.random_image(4, 4))
            files.mask(tmp_path / split / "masks" / f"{i}.png", np.full((4, 4), i % 2))
    train = build_dataset(f"folder:{tmp_path}", "train", class_names=("bg", "fg"))
    val = build_dataset(f"folder:{tmp_path}", "val", class_names=("bg", "fg"))
    assert (len(train), len(val)) == (3, 1)
    assert train.info.class_names == ("bg", "fg")


def test_folder_needs_num_classes(tmp_path, files):
    files.rgb(tmp_path / "images" / "a.png", files.random_image(2, 2))
    files.mask(tmp_path / "masks" / "a.png", np.zeros((2, 2)))
    with pytest.raises(SlimcvError, match="num_classes"):
        build_dataset(f"folder:{tmp_path}")


def test_folder_image_without_mask_is_named(tmp_path, files):
    files.rgb(tmp_path / "images" / "a.png", files.random_image(2, 2))
    files.rgb(tmp_path / "images" / "lonely.png", files.random_image(2, 2))
    files.mask(tmp_path / "masks" / "a.png", np.zeros((2, 2)))
    with pytest.raises(SlimcvError, match="lonely.png"):
        build_dataset(f"folder:{tmp_path}", num_classes=2)


# ---------------------------------------------------------------- synthetic shapes


def test_synthetic_shapes_is_deterministic_by_seed():
    a = build_dataset("synthetic-shapes", "train", seed=0)
    b = build_dataset("synthetic-shapes", "train", seed=0)
    c = build_dataset("synthetic-shapes", "train", seed=1)
    img_a, mask_a = a[3]
    img_b, mask_b = b[3]
    assert isinstance(img_a, tv_tensors.Image) and isinstance(mask_a, tv_tensors.Mask)
    assert img_a.shape == (3, 64, 64) and img_a.dtype == torch.uint8
    assert torch.equal(img_a, img_b) and torch.equal(mask_a, mask_b)
    assert torch.equal(a[3][0], img_a)  # same object asked twice
    assert not torch.equal(c[3][0], img_a)
    assert not torch.equal(a[4][0], img_a)
    val = build_dataset("synthetic-shapes", "val", seed=0)
    assert not torch.equal(val[3][0], img_a)
    assert (len(a), len(val)) == (512, 128)


def test_synthetic_shapes_masks_hold_only_its_classes():
    ds = build_dataset("synthetic-shapes", "train", size=48, length=16)
    seen = set()
    for i in range(len(ds)):
        _, mask = ds[i]
        assert mask.shape == (48, 48) and mask.dtype == torch.int64
        values = set(mask.unique().tolist())
        assert values <= {0, 1, 2, 3}
        assert len(values) >= 2  # background plus at least one shape
        seen |= values
    assert seen == {0, 1, 2, 3}
    assert ds.info.num_classes == 4


def test_synthetic_shapes_classification_labels():
    ds = build_dataset("synthetic-shapes:classification", "train", length=24)
    assert ds.info.task == "classification" and ds.info.num_classes == 3
    labels = []
    for i in range(len(ds)):
        image, label = ds[i]
        assert image.shape == (3, 64, 64)
        assert type(label) is int and 0 <= label <= 2
        labels.append(label)
    assert set(labels) == {0, 1, 2}
    assert labels == [ds[i][1] for i in range(len(ds))]


def test_synthetic_shapes_through_load_data():
    bundle = load_data({"spec": "synthetic-shapes", "subset": 4, "val_subset": 2})
    assert (len(bundle.train), len(bundle.val)) == (4, 2)
    image, mask = bundle.train[0]
    assert image.dtype == torch.float32 and image.shape == (3, 64, 64)
    assert mask.dtype == torch.int64 and set(mask.unique().tolist()) <= {0, 1, 2, 3, 255}


@pytest.mark.parametrize("options, match", [
    ({"task": "keypoints"}, "keypoints"),
    ({"size": 8}, "too small"),
])
def test_synthetic_shapes_bad_options(options, match):
    with pytest.raises(SlimcvError, match=match):
        build_dataset("synthetic-shapes", **options)


def test_synthetic_shapes_index_out_of_range():
    ds = build_dataset("synthetic-shapes", length=3)
    with pytest.raises(IndexError):
        ds[3]
