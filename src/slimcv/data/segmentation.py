"""Segmentation datasets in the layouts their users already have: CamVid, Cityscapes, VOC, folder."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from slimcv.data._base import DatasetInfo, SegmentationFiles, identity_lut
from slimcv.data._registry import DATASETS
from slimcv.errors import SlimcvError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _require_dir(root: str | Path | None, name: str, hint: str) -> Path:
    if not root:
        raise SlimcvError(f"Dataset {name!r} needs a path: write it as '{name}:PATH' ({hint}).")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise SlimcvError(f"Dataset folder {path} does not exist; check the path in '{name}:{root}' ({hint}).")
    return path


CAMVID_INFO = DatasetInfo(
    name="camvid",
    task="segmentation",
    class_names=("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                 "Pedestrian", "Bicyclist"),
    palette=((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
             (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)),
    default_augment=("scale_crop", "rotate", "shift", "hflip"),
    native_size=(360, 480),
    extra={"median_frequency_weights": (0.2595, 0.1826, 4.5640, 0.1417, 0.9051, 0.3826, 9.6446, 1.8418,
                                        0.6823, 6.2478, 7.3614)},
)


@DATASETS.register("camvid", task="segmentation")
def camvid(root: str | None, split: str = "train", transform: Callable | None = None) -> SegmentationFiles:
    """CamVid in the SegNet layout: ``{split}.txt`` lists 'image label' paths; void (11) is ignored."""
    base = _require_dir(root, "camvid", "the folder holding train.txt, val.txt and the image folders")
    listing = base / f"{split}.txt"
    if not listing.is_file():
        raise SlimcvError(f"CamVid list file {listing} is missing; the SegNet layout has train.txt, val.txt, test.txt.")
    pairs = []
    for n, line in enumerate(listing.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise SlimcvError(f"{listing}:{n} should hold 'image_path label_path', got {line!r}.")
        pairs.append(tuple(_resolve_listed(base, p) for p in parts))
    return SegmentationFiles(pairs, CAMVID_INFO, identity_lut(11, 255, extra_ignore=(11,)), transform)


def _resolve_listed(base: Path, entry: str) -> Path:
    # SegNet's list files hold absolute paths like /SegNet/CamVid/train/x.png: keep the last two parts.
    p = Path(entry)
    if not p.is_absolute() and (base / p).exists():
        return base / p
    return base / Path(*p.parts[-2:])


# Cityscapes labelIds -> trainIds (the 19 evaluation classes); everything else is ignored.
_CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                         25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_INFO = DatasetInfo(
    name="cityscapes",
    task="segmentation",
    class_names=("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                 "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                 "motorcycle", "bicycle"),
    palette=((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
             (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
             (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32)),
    default_augment=("scale_crop", "hflip"),
    native_size=(1024, 2048),
)


@DATASETS.register("cityscapes", task="segmentation")
def cityscapes(root: str | None, split: str = "train", transform: Callable | None = None) -> SegmentationFiles:
    """Cityscapes official layout: leftImg8bit/{split}/{city}/*_leftImg8bit.png + gtFine/..._labelIds.png."""
    base = _require_dir(root, "cityscapes", "the folder holding leftImg8bit/ and gtFine/")
    img_dir = base / "leftImg8bit" / split
    if not img_dir.is_dir():
        raise SlimcvError(f"Cityscapes folder {img_dir} is missing; expected leftImg8bit/{split}/<city>/*.png.")
    pairs = []
    for img in sorted(img_dir.glob("*/*_leftImg8bit.png")):
        stem = img.name[: -len("_leftImg8bit.png")]
        pairs.append((img, base / "gtFine" / split / img.parent.name / f"{stem}_gtFine_labelIds.png"))
    lut = np.full(256, 255, dtype=np.int64)
    for label_id, train_id in _CITYSCAPES_TRAIN_IDS.items():
        lut[label_id] = train_id
    return SegmentationFiles(pairs, CITYSCAPES_INFO, lut, transform)


def _voc_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return tuple(out)


VOC_INFO = DatasetInfo(
    name="voc",
    task="segmentation",
    class_names=("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
                 "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
                 "train", "tvmonitor"),
    palette=_voc_palette(21),
    default_augment=("scale_crop", "hflip"),
)


@DATASETS.register("voc", task="segmentation")
def voc(root: str | None, split: str = "train", transform: Callable | None = None) -> SegmentationFiles:
    """Pascal VOC 2012: JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/{split}.txt; border 255 ignored."""
    base = _require_dir(root, "voc", "the VOC2012 folder holding JPEGImages/ and SegmentationClass/")
    if not (base / "JPEGImages").is_dir() and (base / "VOC2012").is_dir():
        base = base / "VOC2012"
    listing = base / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise SlimcvError(f"VOC list file {listing} is missing; expected ImageSets/Segmentation/{split}.txt.")
    ids = [s.strip() for s in listing.read_text().splitlines() if s.strip()]
    pairs = [(base / "JPEGImages" / f"{i}.jpg", base / "SegmentationClass" / f"{i}.png") for i in ids]
    return SegmentationFiles(pairs, VOC_INFO, identity_lut(21, 255), transform)


@DATASETS.register("folder", task="segmentation")
def folder(
    root: str | None,
    split: str = "train",
    transform: Callable | None = None,
    num_classes: int | None = None,
    ignore_index: int = 255,
    class_names: tuple[str, ...] | None = None,
) -> SegmentationFiles:
    """A generic layout: ``images/`` and ``masks/`` matched by file stem, optionally under ``{split}/``."""
    base = _require_dir(root, "folder", "a folder holding images/ and masks/ (optionally inside train/ and val/)")
    if (base / split / "images").is_dir():
        base = base / split
    img_dir, mask_dir = base / "images", base / "masks"
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise SlimcvError(f"Folder dataset needs {d}; put images in images/ and index masks in masks/.")
    masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS}
    images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    missing = [p.name for p in images if p.stem not in masks]
    if missing:
        raise SlimcvError(
            f"{len(missing)} image(s) in {img_dir} have no mask with the same stem in {mask_dir} "
            f"(first: {missing[0]}); add the masks or remove those images."
        )
    if class_names is None:
        if num_classes is None:
            raise SlimcvError("Folder dataset needs num_classes (or class_names) in its options, e.g. num_classes: 5.")
        class_names = tuple(f"class{i}" for i in range(num_classes))
    info = DatasetInfo(name="folder", task="segmentation", class_names=tuple(class_names), ignore_index=ignore_index)
    return SegmentationFiles([(p, masks[p.stem]) for p in images], info, identity_lut(len(class_names), ignore_index),
                             transform)
