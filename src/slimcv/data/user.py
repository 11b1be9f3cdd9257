"""The user's own datasets (any ``Dataset`` or ``DataLoader`` of (image, target) pairs) as a DataBundle."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from slimcv.config import DataConfig
from slimcv.data._base import DatasetInfo
from slimcv.errors import SlimcvError

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class UserDataset(Dataset):
    """Items of a user's dataset as (float CHW image, long target): PIL/uint8 images scaled and normalised."""

    def __init__(self, inner: Dataset, mean, std, normalise: bool) -> None:
        self.inner, self.normalise = inner, normalise
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):
        item = self.inner[index]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise SlimcvError(f"Item {index} of {type(self.inner).__name__} is not an (image, target) pair; make "
                              "__getitem__ return (image, label) or (image, mask).")
        image, target = item[0], item[1]
        return self.image(image, index), _target(target, index)

    def image(self, image: Any, index: int) -> torch.Tensor:
        if isinstance(image, Image.Image):
            x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
        elif isinstance(image, np.ndarray):
            x = torch.from_numpy(image.copy())
            x = x.permute(2, 0, 1) if x.ndim == 3 and x.shape[-1] in (1, 3) and x.shape[0] not in (1, 3) else x
        elif torch.is_tensor(image):
            x = image
        else:
            raise SlimcvError(f"Image {index} is a {type(image).__name__}; return a PIL image, a uint8 HxWx3 array "
                              "or a CxHxW tensor.")
        if x.ndim != 3:
            raise SlimcvError(f"Image {index} has shape {tuple(x.shape)}; slimcv takes CxHxW images.")
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
            return (x - self.mean) / self.std if self.normalise else x
        return x.float()


def _target(target: Any, index: int):
    if isinstance(target, Image.Image):
        target = np.asarray(target)
    if isinstance(target, np.ndarray):
        target = torch.from_numpy(target.copy())
    if isinstance(target, (int, np.integer)):
        return int(target)
    if torch.is_tensor(target):
        if target.ndim == 0:
            return int(target)
        if target.ndim == 3 and target.shape[0] == 1:
            target = target[0]
        if target.ndim == 2:
            return target.long()
    raise SlimcvError(f"Target {index} is {type(target).__name__} {getattr(target, 'shape', '')}; give a class "
                      "index (classification) or an HxW mask of class indices (segmentation).")


def wrap_user_data(train, val, calibration=None, *, model=None, num_classes=None, class_names=None, task=None,
                   mean=None, std=None, ignore_index=255, palette=None, name=None):
    from slimcv.data import DataBundle

    batch_size = train.batch_size if isinstance(train, DataLoader) and train.batch_size else 8
    train_ds = train.dataset if isinstance(train, DataLoader) else train
    val_ds = val.dataset if isinstance(val, DataLoader) else val
    for part, ds in (("train", train_ds), ("val", val_ds)):
        if len(ds) == 0:
            raise SlimcvError(f"The {part} dataset is empty; give at least one (image, target) pair.")
    first_image, first_target = val_ds[0][0], val_ds[0][1]
    raw = isinstance(first_image, (Image.Image, np.ndarray)) or (torch.is_tensor(first_image)
                                                                  and first_image.dtype == torch.uint8)
    if mean is None or std is None:
        mean, std = IMAGENET if raw else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    wrap = lambda ds: UserDataset(ds, mean, std, raw)  # noqa: E731
    train_w, val_w = wrap(train_ds), wrap(val_ds)
    target = _target(first_target, 0)
    task = task or ("classification" if isinstance(target, int) else "segmentation")
    class_names = list(class_names or getattr(train_ds, "classes", None) or [])
    if not class_names:
        num_classes = num_classes or _classes_from_model(model, val_w) or _classes_from_labels(train_ds, task)
        if num_classes is None:
            raise SlimcvError("Cannot tell how many classes the data has: pass num_classes= (or class_names=), "
                              "or a dataset with a .classes list.")
        class_names = [f"class_{i}" for i in range(num_classes)]
    elif num_classes is not None and num_classes != len(class_names):
        raise SlimcvError(f"num_classes={num_classes} but {len(class_names)} class names were given.")
    label = name or type(train_ds).__name__
    info = DatasetInfo(name=label, task=task, class_names=tuple(class_names), ignore_index=ignore_index,
                       palette=tuple(map(tuple, palette)) if palette else None, mean=tuple(mean), std=tuple(std),
                       default_augment=())
    size = tuple(val_w[0][0].shape[-2:])
    config = DataConfig(spec=f"python:{label}", batch_size=batch_size, workers=0, size=size)
    calib = wrap(calibration.dataset if isinstance(calibration, DataLoader) else calibration) if calibration else None
    return DataBundle(train=train_w, val=val_w, info=info, config=config, calibration=calib)


def _classes_from_labels(ds, task: str) -> int | None:
    """Classification labels a dataset exposes without loading images: ``.targets`` or a TensorDataset's."""
    if task != "classification":
        return None
    labels = getattr(ds, "targets", None)
    if labels is None and isinstance(ds, torch.utils.data.TensorDataset) and len(ds.tensors) > 1:
        labels = ds.tensors[1]
    if labels is None or len(labels) == 0:
        return None
    return int(torch.as_tensor(labels).max()) + 1


def _classes_from_model(model, val) -> int | None:
    if model is None:
        return None
    was = model.training
    try:
        with torch.no_grad():
            out = model.eval()(val[0][0][None])
    finally:
        model.train(was)
    out = out.get("out", next(iter(out.values()))) if isinstance(out, dict) else out
    return int(out.shape[1])
