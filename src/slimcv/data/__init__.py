"""Datasets by spec (``camvid:PATH``, ``cifar10:PATH``, ``synthetic-shapes`` ...), presets and loaders."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from slimcv.config import DataConfig, build_config
from slimcv.data import classification as _classification  # noqa: F401  (registers datasets)
from slimcv.data import detection as _detection  # noqa: F401
from slimcv.data import segmentation as _segmentation  # noqa: F401
from slimcv.data import synthetic as _synthetic  # noqa: F401
from slimcv.data._base import DatasetInfo
from slimcv.data._registry import DATASETS
from slimcv.data.presets import (
    ClassificationPresetEval,
    ClassificationPresetTrain,
    DetectionPresetEval,
    DetectionPresetTrain,
    SegmentationPresetEval,
    SegmentationPresetTrain,
)
from slimcv.errors import SlimcvError

__all__ = ["DataBundle", "DatasetInfo", "as_bundle", "build_dataset", "from_datasets", "load_data", "make_loader",
           "list_datasets", "parse_spec"]


def list_datasets() -> list[str]:
    return DATASETS.names()


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``NAME:ARG`` into the registered name and its argument (a path for real datasets)."""
    if not isinstance(spec, str) or not spec.strip():
        raise SlimcvError(f"Dataset spec {spec!r} is empty; write NAME:PATH, e.g. camvid:data/camvid.")
    name, _, arg = spec.partition(":")
    DATASETS.get(name)
    return name, (arg or None)


def build_dataset(spec: str, split: str = "train", transform=None, **options: Any) -> Dataset:
    """Build the dataset a spec names; the result has an ``.info`` (:class:`DatasetInfo`)."""
    name, arg = parse_spec(spec)
    try:
        return DATASETS.get(name)(arg, split=split, transform=transform, **options)
    except TypeError as e:
        raise SlimcvError(f"Bad options for dataset {name!r}: {e}.") from e


@dataclass
class DataBundle:
    """Train and validation datasets with their shared metadata."""

    train: Dataset
    val: Dataset
    info: DatasetInfo
    config: DataConfig
    calibration: Dataset | None = None  # images for INT8 calibration (default: train read like val)

    @property
    def task(self) -> str:
        return self.info.task

    @property
    def num_classes(self) -> int:
        return self.info.num_classes


def load_data(cfg: DataConfig | dict[str, Any] | str) -> DataBundle:
    """Build train/val datasets with the presets the config asks for."""
    if isinstance(cfg, str):
        cfg = DataConfig(spec=cfg)
    cfg = build_config(DataConfig, cfg, "data config")
    probe = build_dataset(cfg.spec, cfg.train_split, **cfg.options)
    info: DatasetInfo = probe.info
    augment = info.default_augment if cfg.augment is None else cfg.augment
    size = cfg.size if cfg.size is not None else info.native_size
    eval_size = cfg.eval_size if cfg.eval_size is not None else cfg.size
    if info.task == "segmentation":
        train_t = SegmentationPresetTrain(size=size, augment=augment, mean=info.mean, std=info.std,
                                          ignore_index=info.ignore_index)
        val_t = SegmentationPresetEval(size=eval_size, mean=info.mean, std=info.std)
    elif info.task == "detection":
        train_t = DetectionPresetTrain(size=size, augment=augment, mean=info.mean, std=info.std)
        val_t = DetectionPresetEval(size=eval_size, mean=info.mean, std=info.std)
    else:
        train_t = ClassificationPresetTrain(size=size, augment=augment, mean=info.mean, std=info.std)
        val_t = ClassificationPresetEval(size=eval_size or size, mean=info.mean, std=info.std)
    probe.transform = train_t
    val = build_dataset(cfg.spec, cfg.val_split, transform=val_t, **cfg.options)
    train = Subset(probe, spread(cfg.subset, len(probe))) if cfg.subset else probe
    if cfg.val_subset:
        val = Subset(val, spread(cfg.val_subset, len(val)))
    return DataBundle(train=train, val=val, info=info, config=cfg)


def as_bundle(data: Any, model: torch.nn.Module | None = None, **info: Any) -> DataBundle:
    """Any data a stage takes as a DataBundle: a spec string, a DataConfig or dict, a DataBundle, or a pair
    ``(train, val)`` of ``Dataset``s / ``DataLoader``s yielding (image, target)."""
    if isinstance(data, DataBundle):
        return data
    if isinstance(data, (tuple, list)) and len(data) in (2, 3) and all(
            isinstance(d, (Dataset, DataLoader)) for d in data):
        return from_datasets(*data, model=model, **info)
    if isinstance(data, (Dataset, DataLoader)):
        raise SlimcvError("Give the data as a pair (train, val) of Datasets or DataLoaders: slimcv scores every "
                          "model on the validation part.")
    if data is None:
        raise SlimcvError("No data given: pass a dataset spec (e.g. camvid:PATH) or (train_dataset, val_dataset).")
    return load_data(data)


def from_datasets(train: Dataset | DataLoader, val: Dataset | DataLoader, calibration: Dataset | None = None, *,
                  model: torch.nn.Module | None = None, num_classes: int | None = None,
                  class_names: list[str] | None = None, task: str | None = None, mean=None, std=None,
                  ignore_index: int = 255, palette=None, name: str | None = None) -> DataBundle:
    """A DataBundle over a user's own (image, target) datasets; PIL or uint8 images are converted and normalised
    (ImageNet mean/std unless given), float tensors are used as they are (give ``mean``/``std`` if your
    dataset normalised them, so a deployed model is fed the same)."""
    from slimcv.data.user import wrap_user_data

    return wrap_user_data(train, val, calibration, model=model, num_classes=num_classes, class_names=class_names,
                          task=task, mean=mean, std=std, ignore_index=ignore_index, palette=palette, name=name)


def spread(n: int, total: int) -> list[int]:
    """``n`` indices spread evenly over ``range(total)``: datasets stored class by class (CIFAR-10's folders)
    keep every class in a subset, where the first N would all be airplanes."""
    n = min(n, total)
    return [i * total // n for i in range(n)]


def collate_pad(batch: list[tuple[torch.Tensor, Any]], ignore_index: int = 255):
    """Stack a batch; images and masks of different sizes are padded (masks with the ignore index).

    A target may be a tuple (e.g. mask + cached teacher map); each part is stacked on its own. Detection targets
    (dicts of boxes and labels) stay a list, one dict per image."""
    images, targets = zip(*batch)
    return _pad_stack(images, 0.0), _collate_target(list(targets), ignore_index)


def _collate_target(items: list, ignore_index: int):
    first = items[0]
    if isinstance(first, dict):  # detection: a different number of boxes per image
        return items
    if isinstance(first, (tuple, list)):
        return tuple(_collate_target(list(part), ignore_index) for part in zip(*items))
    if isinstance(first, int) or (torch.is_tensor(first) and first.ndim == 0):
        return torch.as_tensor(items, dtype=torch.long)
    if first.ndim == 2:  # (H, W) class-index mask
        return _pad_stack(items, ignore_index).long()
    return _pad_stack(items, 0)  # e.g. (C, H, W) teacher maps or (C,) logits, dtype kept


def _pad_stack(tensors, fill):
    h = max(t.shape[-2] for t in tensors)
    w = max(t.shape[-1] for t in tensors)
    if all(t.shape[-2:] == (h, w) for t in tensors):
        return torch.stack(tensors)
    out = tensors[0].new_full((len(tensors), *tensors[0].shape[:-2], h, w), fill)
    for i, t in enumerate(tensors):
        out[i, ..., : t.shape[-2], : t.shape[-1]] = t
    return out


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    workers: int = 2,
    seed: int = 0,
    ignore_index: int = 255,
    distributed: bool = False,
) -> DataLoader:
    """A DataLoader whose order depends only on (seed, epoch): set ``loader.sampler.set_epoch(e)``."""
    from functools import partial

    from torch.utils.data.distributed import DistributedSampler

    if distributed or train:
        # DistributedSampler also in one process: same permutation for 1 or N processes (DDP equality test).
        sampler = DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=train,
                                     **({} if distributed else {"num_replicas": 1, "rank": 0}))
    else:
        sampler = None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=workers,
        collate_fn=partial(collate_pad, ignore_index=ignore_index),
        drop_last=train,
        pin_memory=torch.cuda.is_available(),
    )
