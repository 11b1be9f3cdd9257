"""Classification datasets: ImageFolder trees and CIFAR-10 with a seeded, stratified hold-out split."""
from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from slimcv.data._base import ClassificationFiles, DatasetInfo
from slimcv.data._registry import DATASETS
from slimcv.data.segmentation import IMAGE_EXTS, _require_dir
from slimcv.errors import SlimcvError

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _scan_classes(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise SlimcvError(f"{root} has no class folders; ImageFolder expects ROOT/<class>/<image> files.")
    samples = []
    for idx, name in enumerate(classes):
        files = sorted((p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_EXTS), key=lambda p: p.name)
        if not files:
            raise SlimcvError(f"Class folder {root / name} holds no images ({', '.join(sorted(IMAGE_EXTS))}); add "
                              "images to it or remove the folder: a class without images cannot be learned.")
        samples += [(p, idx) for p in files]
    return classes, samples


def stratified_split(
    samples: list[tuple[Path, int]], val_per_class: int, seed: int
) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Hold out ``val_per_class`` samples of each class, chosen by a seeded shuffle (same seed, same split)."""
    by_class: dict[int, list[tuple[Path, int]]] = {}
    for s in samples:
        by_class.setdefault(s[1], []).append(s)
    train, val = [], []
    rng = random.Random(seed)
    for label in sorted(by_class):
        items = list(by_class[label])
        if len(items) <= val_per_class:
            raise SlimcvError(
                f"Class {label} has {len(items)} images, not enough to hold out {val_per_class} for validation; "
                "lower val_per_class."
            )
        rng.shuffle(items)
        val += items[:val_per_class]
        train += items[val_per_class:]
    key = lambda s: (s[1], s[0].name)  # noqa: E731
    return sorted(train, key=key), sorted(val, key=key)


def _imagefolder_samples(base: Path, split: str, val_per_class: int, seed: int):
    if split != "train" and (base / split).is_dir():
        return _scan_classes(base / split)
    if (base / "train").is_dir():
        if (base / "val").is_dir():
            return _scan_classes(base / "train")
        base = base / "train"
    if split not in ("train", "val"):
        raise SlimcvError(f"Split {split!r} is not in {base}; use 'train' or 'val' (val is held out from train).")
    classes, samples = _scan_classes(base)
    train, val = stratified_split(samples, val_per_class, seed)
    return classes, (train if split == "train" else val)


@DATASETS.register("imagefolder", task="classification")
def imagefolder(
    root: str | None,
    split: str = "train",
    transform: Callable | None = None,
    val_per_class: int = 50,
    seed: int = 0,
) -> ClassificationFiles:
    """ROOT/<class>/<image>; uses ROOT/train and ROOT/val when present, else holds out ``val_per_class``."""
    base = _require_dir(root, "imagefolder", "a folder of class sub-folders")
    classes, samples = _imagefolder_samples(base, split, val_per_class, seed)
    info = DatasetInfo(name="imagefolder", task="classification", class_names=tuple(classes),
                       default_augment=("scale_crop", "hflip"))
    return ClassificationFiles(samples, info, transform)


@DATASETS.register("cifar10", task="classification")
def cifar10(
    root: str | None,
    split: str = "train",
    transform: Callable | None = None,
    val_per_class: int = 500,
    seed: int = 0,
) -> ClassificationFiles:
    """CIFAR-10 as JPEG class folders (ROOT or ROOT/train); val is a seeded stratified hold-out of train."""
    base = _require_dir(root, "cifar10", "the cifar10 folder of class sub-folders, or its train/ folder")
    classes, samples = _imagefolder_samples(base, split, val_per_class, seed)
    info = DatasetInfo(name="cifar10", task="classification", class_names=tuple(classes), mean=CIFAR_MEAN,
                       std=CIFAR_STD, default_augment=("pad_crop", "hflip"), native_size=(32, 32))
    return ClassificationFiles(samples, info, transform)
