"""Distilling on images without labels: the student learns them from the teacher's answers alone.

The common real case is a trained teacher, labels for a few images and many more images without any. The
unlabelled images join the training set with a target that marks them (``UNLABELLED``): the cross-entropy
skips them, every KD term uses them. With the offline cache the teacher's maps cover them too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset
from torchvision import tv_tensors

from slimcv.errors import SlimcvError

UNLABELLED = -100  # a target value (a whole mask, or a label): no label here, the teacher's answer only
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class IndexedView:
    """Samples ``indices`` of a dataset, renumbered from 0, with its ``load``, ``transform`` and ``info``."""

    def __init__(self, dataset, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices
        self.transform, self.info = dataset.transform, dataset.info

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, i: int):
        return self.dataset.load(self.indices[i])


class ImageFolder:
    """Every image under a folder (recursively, sorted): samples without labels."""

    def __init__(self, root: Path) -> None:
        self.files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise SlimcvError(f"No images ({', '.join(IMAGE_SUFFIXES)}) under {root}; give a folder of images or a "
                              "dataset spec for --unlabelled.")

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int):
        from slimcv.data._base import load_rgb

        image = load_rgb(self.files[index])
        return tv_tensors.Image(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)), None


def unlabelled_source(spec: str | dict[str, Any]):
    """The images of ``spec``: a folder of images, or a dataset spec (or {spec, options, split}) whose labels go
    unused."""
    if isinstance(spec, dict):
        spec, split, options = spec.get("spec"), spec.get("split", "train"), dict(spec.get("options") or {})
        if not isinstance(spec, str):
            raise SlimcvError("unlabelled as a mapping needs 'spec' (e.g. {spec: synthetic-shapes, options: {seed: 1}}).")
    else:
        split, options = "train", {}
        path = Path(spec).expanduser()
        if path.is_dir():
            return ImageFolder(path)
    from slimcv.data import build_dataset

    dataset = build_dataset(spec, split, **options)
    if not hasattr(dataset, "load"):
        raise SlimcvError(f"Dataset {spec!r} cannot be read image by image; give a folder of images for --unlabelled.")
    return dataset


class WithUnlabelled(torch.utils.data.Dataset):
    """The labelled training samples, then the unlabelled ones with an ``UNLABELLED`` target, under the labelled
    set's transform; ``load`` and ``info`` as a file dataset has them (the teacher cache reads those)."""

    def __init__(self, labelled, unlabelled, task: str, spec: str | dict[str, Any]) -> None:
        self.labelled, self.unlabelled, self.task = labelled, unlabelled, task
        self.transform, self.info = labelled.transform, labelled.info
        self.cache_id = {"unlabelled": spec, "unlabelled_samples": len(unlabelled)}

    def __len__(self) -> int:
        return len(self.labelled) + len(self.unlabelled)

    def load(self, index: int):
        if index < len(self.labelled):
            return self.labelled.load(index)
        image, _ = self.unlabelled.load(index - len(self.labelled))
        if self.task == "segmentation":
            return image, tv_tensors.Mask(torch.full(image.shape[-2:], UNLABELLED, dtype=torch.int64))
        return image, UNLABELLED

    def __getitem__(self, index: int):
        image, target = self.load(index)
        if self.transform is None:
            return image, target
        if self.task == "segmentation":
            return self.transform(image, target)
        return self.transform(image), target


def add_unlabelled(data: Any, spec: str | dict[str, Any]) -> Any:
    """``data`` (a DataBundle) whose training set also holds the images of ``spec``, marked unlabelled."""
    from slimcv.data import DataBundle

    if data.task not in ("segmentation", "classification"):
        raise SlimcvError(f"Unlabelled images are for classification and segmentation students, not {data.task}.")
    train = data.train
    if isinstance(train, Subset):
        train = IndexedView(train.dataset, [int(i) for i in train.indices])
    if not hasattr(train, "load"):
        raise SlimcvError("Unlabelled images join a training set read from a dataset spec; with your own Dataset, "
                          "add the images to it yourself.")
    merged = WithUnlabelled(train, unlabelled_source(spec), data.task, spec)
    return DataBundle(train=merged, val=data.val, info=data.info, config=data.config, calibration=data.calibration)


def split_targets(targets: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets for the cross-entropy, targets for the KD terms): unlabelled samples are ignored by the first and
    count in the second (KD terms use targets only to leave out void pixels)."""
    marked = targets == UNLABELLED
    if not bool(marked.any()):
        return targets, targets
    return targets.masked_fill(marked, ignore_index), targets.masked_fill(marked, 0)


def labelled_share(labelled: torch.Tensor, kd_targets: torch.Tensor, ignore_index: int) -> float:
    """The share of a batch's usable pixels (or samples) that carry a label: the cross-entropy, a mean over the
    labelled ones, is scaled by it, so every image weighs the same in the loss whether or not it has a label
    (else a few labelled images would outweigh many unlabelled ones in every batch)."""
    if labelled is kd_targets:
        return 1.0
    usable = int((kd_targets != ignore_index).sum())
    return int((labelled != ignore_index).sum()) / max(1, usable)
