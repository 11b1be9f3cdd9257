"""Transform presets on torchvision.transforms.v2: image and mask (or boxes) move together, masks filled with ignore."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from slimcv.errors import SlimcvError

AUGMENTATIONS = ("hflip", "rotate", "shift", "scale_crop", "pad_crop", "color_jitter")


def _check_augment(augment: Sequence[str]) -> None:
    bad = [a for a in augment if a not in AUGMENTATIONS]
    if bad:
        raise SlimcvError(f"Unknown augmentation(s) {bad}; choose from {list(AUGMENTATIONS)}.")


def _size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    if len(size) != 2:
        raise SlimcvError(f"Image size {size!r} must be one int or [height, width].")
    return (int(size[0]), int(size[1]))


def _after_resize(augment: Sequence[str], size: tuple[int, int] | None, rotate_degrees: float,
                  shift_fraction: float, fill) -> list:
    """The augmentations after the resize or crop, shared by segmentation and detection (masks and boxes move
    with the image; ``fill`` is what uncovered mask pixels get)."""
    t: list = []
    if "rotate" in augment:
        t.append(v2.RandomRotation(rotate_degrees, fill=fill))
    if "shift" in augment:
        t.append(v2.RandomAffine(degrees=0, translate=(shift_fraction, shift_fraction), fill=fill))
    if "pad_crop" in augment:
        if size is None:
            raise SlimcvError("Augmentation 'pad_crop' needs a training size; set size: [H, W].")
        t.append(v2.RandomCrop(size, padding=max(1, size[0] // 8), fill=fill))
    if "hflip" in augment:
        t.append(v2.RandomHorizontalFlip())
    if "color_jitter" in augment:
        t.append(v2.ColorJitter(0.3, 0.3, 0.3, 0.02))
    return t


class SegmentationPresetTrain:
    """Training transforms for (image, mask): resize or scale-crop, rotate, shift, flip, jitter, normalise."""

    def __init__(
        self,
        *,
        size: int | Sequence[int] | None,
        augment: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        ignore_index: int = 255,
        rotate_degrees: float = 10.0,
        shift_fraction: float = 0.1,
        scale_range: tuple[float, float] = (0.5, 1.0),
    ) -> None:
        _check_augment(augment)
        size = _size(size)
        # what the batched path (data/device_batches.py) reproduces on whole batches
        self.settings = {"size": size, "augment": tuple(augment), "mean": tuple(mean), "std": tuple(std),
                         "ignore_index": ignore_index, "rotate_degrees": rotate_degrees,
                         "shift_fraction": shift_fraction, "scale_range": tuple(scale_range)}
        fill = {tv_tensors.Mask: ignore_index, "others": 0}
        t: list = []
        if "scale_crop" in augment:
            if size is None:
                raise SlimcvError("Augmentation 'scale_crop' needs a training size; set size: [H, W].")
            t.append(v2.RandomResizedCrop(size, scale=scale_range, ratio=(size[1] / size[0],) * 2, antialias=True))
        elif size is not None:
            t.append(v2.Resize(size, antialias=True))
        t += _after_resize(augment, size, rotate_degrees, shift_fraction, fill)
        t += [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
              v2.Normalize(mean=list(mean), std=list(std)), v2.ToPureTensor()]
        self.transforms = v2.Compose(t)

    def __call__(self, *sample):
        return self.transforms(*sample)


class SegmentationPresetEval:
    """Eval transforms: the image may be resized for the model; the mask keeps its native resolution."""

    def __init__(self, *, size: int | Sequence[int] | None, mean: Sequence[float], std: Sequence[float]) -> None:
        size = _size(size)
        t: list = [v2.Resize(size, antialias=True)] if size else []
        self.image = v2.Compose(t + [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)),
                                     v2.ToPureTensor()])

    def __call__(self, image, mask=None):
        out = self.image(image)
        return out if mask is None else (out, mask.as_subclass(torch.Tensor))


class ClassificationPresetTrain:
    """Training transforms for an image: scale-crop or pad-crop, flip, jitter, normalise."""

    def __init__(self, *, size: int | Sequence[int] | None, augment: Sequence[str], mean, std, **_: object) -> None:
        _check_augment(augment)
        size = _size(size)
        self.settings = {"size": size, "augment": tuple(augment), "mean": tuple(mean), "std": tuple(std)}
        t: list = []
        if "scale_crop" in augment and size:
            t.append(v2.RandomResizedCrop(size, antialias=True))
        elif size:
            t.append(v2.Resize(size, antialias=True))
        if "pad_crop" in augment and size:
            t.append(v2.RandomCrop(size, padding=max(1, size[0] // 8), padding_mode="reflect"))
        if "rotate" in augment:
            t.append(v2.RandomRotation(15))
        if "shift" in augment:
            t.append(v2.RandomAffine(degrees=0, translate=(0.1, 0.1)))
        if "hflip" in augment:
            t.append(v2.RandomHorizontalFlip())
        if "color_jitter" in augment:
            t.append(v2.ColorJitter(0.3, 0.3, 0.3))
        t += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)), v2.ToPureTensor()]
        self.transforms = v2.Compose(t)

    def __call__(self, image):
        return self.transforms(image)


class ClassificationPresetEval:
    """Eval transforms: resize (then centre-crop for large images) and normalise."""

    def __init__(self, *, size: int | Sequence[int] | None, mean, std) -> None:
        size = _size(size)
        t: list = []
        if size and size[0] >= 128:
            t += [v2.Resize(int(size[0] / 0.875), antialias=True), v2.CenterCrop(size)]
        elif size:
            t.append(v2.Resize(size, antialias=True))
        t += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)), v2.ToPureTensor()]
        self.transforms = v2.Compose(t)

    def __call__(self, image):
        return self.transforms(image)


def _labels_and_crowd(inputs):
    """What SanitizeBoundingBoxes drops with a box: its label and its iscrowd flag."""
    target = inputs[1] if isinstance(inputs, (tuple, list)) else inputs
    return (target["labels"], target["iscrowd"]) if "iscrowd" in target else target["labels"]


class DetectionPresetTrain:
    """Training transforms for (image, target dict): boxes move with every geometric augmentation; boxes left
    outside the image are dropped with their labels and iscrowd flags."""

    def __init__(
        self,
        *,
        size: int | Sequence[int] | None,
        augment: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        rotate_degrees: float = 10.0,
        shift_fraction: float = 0.1,
        scale_range: tuple[float, float] = (0.3, 1.0),
        **_: object,
    ) -> None:
        _check_augment(augment)
        size = _size(size)
        self.settings = {"size": size, "augment": tuple(augment), "mean": tuple(mean), "std": tuple(std),
                         "rotate_degrees": rotate_degrees, "shift_fraction": shift_fraction,
                         "scale_range": tuple(scale_range)}
        t: list = []
        if "scale_crop" in augment and size:
            aspect = size[1] / size[0]
            t.append(v2.RandomResizedCrop(size, scale=scale_range, ratio=(0.75 * aspect, aspect / 0.75),
                                          antialias=True))
        elif "scale_crop" in augment:  # no training size: images keep their own size, as crops of it
            t.append(v2.RandomIoUCrop(min_scale=scale_range[0], max_scale=scale_range[1]))
        elif size:
            t.append(v2.Resize(size, antialias=True))
        t += _after_resize(augment, size, rotate_degrees, shift_fraction, 0)
        t += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1, labels_getter=_labels_and_crowd),
              v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)), v2.ToPureTensor()]
        self.transforms = v2.Compose(t)

    def __call__(self, image, target):
        return self.transforms(image, target)


class DetectionPresetEval:
    """Eval transforms for (image, target dict): resize (the boxes with it) and normalise; every box is kept."""

    def __init__(self, *, size: int | Sequence[int] | None, mean: Sequence[float], std: Sequence[float]) -> None:
        size = _size(size)
        t: list = [v2.Resize(size, antialias=True)] if size else []
        self.transforms = v2.Compose(t + [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)),
                                          v2.ToPureTensor()])

    def __call__(self, image, target=None):
        return self.transforms(image) if target is None else self.transforms(image, target)
