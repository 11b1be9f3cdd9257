"""Dataset building blocks: file lists of images and masks with validated loading."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors

from slimcv.errors import SlimcvError

Task = Literal["classification", "segmentation", "detection"]
INVALID = -1  # marks a mask value that is neither a class nor ignore in a label lookup table


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a report need to know about a dataset."""

    name: str
    task: Task
    class_names: tuple[str, ...]
    ignore_index: int = 255
    palette: tuple[tuple[int, int, int], ...] | None = None
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    default_augment: tuple[str, ...] = ("hflip",)
    native_size: tuple[int, int] | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image as RGB, or raise a SlimcvError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise SlimcvError(f"Image file {path} does not exist; check the dataset path and its list files.")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise SlimcvError(
            f"Cannot read image {path} ({e}); the file is corrupt or not an image: re-export or remove it."
        ) from e


def load_mask(path: str | Path, lut: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    """Read a single-channel label PNG and map it through ``lut``; out-of-range values raise."""
    path = Path(path)
    if not path.is_file():
        raise SlimcvError(f"Mask file {path} does not exist; every image needs a mask with the same stem.")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "P", "I", "I;16"):
                raise SlimcvError(
                    f"Mask {path} has mode {im.mode}, expected one channel of class indices "
                    "(mode L or P); convert colour masks to index masks first."
                )
            raw = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise SlimcvError(f"Cannot read mask {path} ({e}); the file is corrupt: re-export or remove it.") from e
    if raw.max(initial=0) >= len(lut):
        raise SlimcvError(f"Mask {path} holds value {int(raw.max())}, larger than any label this dataset knows.")
    mapped = lut[raw]
    if (mapped == INVALID).any():
        bad = sorted({int(v) for v in np.unique(raw[mapped == INVALID])})[:8]
        raise SlimcvError(
            f"Mask {path} holds values {bad} that are neither a class (0..{num_classes - 1}) nor the "
            f"ignore index {ignore_index}; fix the mask or pass a label mapping for this dataset."
        )
    return mapped.astype(np.int64)


def identity_lut(num_classes: int, ignore_index: int, extra_ignore: Sequence[int] = ()) -> np.ndarray:
    """Lookup table keeping 0..num_classes-1, mapping ignore (and ``extra_ignore``) to ignore."""
    lut = np.full(256, INVALID, dtype=np.int64)
    lut[:num_classes] = np.arange(num_classes)
    for v in (ignore_index, *extra_ignore):
        if 0 <= v < 256:
            lut[v] = ignore_index
    return lut


class SegmentationFiles(Dataset):
    """Pairs of (image, mask) files; yields ``transform(Image, Mask)``."""

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        info: DatasetInfo,
        lut: np.ndarray,
        transform: Callable | None = None,
    ) -> None:
        if not pairs:
            raise SlimcvError(f"Dataset {info.name!r} is empty: no image/mask pairs were found.")
        self.pairs = list(pairs)
        self.info = info
        self.lut = lut
        self.transform = transform
        self.decoded = None  # a data.memory.DecodedStore once the decoded samples are kept in memory

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        """The untransformed sample: uint8 image (3,H,W) and int64 mask (H,W)."""
        if self.decoded is not None and index in self.decoded:
            return self.decoded.get(index)
        img_path, mask_path = self.pairs[index]
        img = load_rgb(img_path)
        mask = load_mask(mask_path, self.lut, self.info.num_classes, self.info.ignore_index)
        if mask.shape != (img.height, img.width):
            raise SlimcvError(
                f"Mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but image {img_path} is "
                f"{img.width}x{img.height}; masks must match their images pixel for pixel."
            )
        image = tv_tensors.Image(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
        return image, tv_tensors.Mask(torch.from_numpy(mask))

    def __getitem__(self, index: int):
        image, mask = self.load(index)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask


class ClassificationFiles(Dataset):
    """A list of (image file, class index); yields ``(transform(Image), label)``."""

    def __init__(self, samples: Sequence[tuple[Path, int]], info: DatasetInfo, transform: Callable | None = None):
        if not samples:
            raise SlimcvError(f"Dataset {info.name!r} is empty: no images were found.")
        for path, label in samples[:1] + samples[-1:]:
            if not 0 <= label < info.num_classes:
                raise SlimcvError(f"Label {label} of {path} is outside 0..{info.num_classes - 1}.")
        self.samples = list(samples)
        self.info = info
        self.transform = transform
        self.decoded = None  # a data.memory.DecodedStore once the decoded samples are kept in memory

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[tv_tensors.Image, int]:
        if self.decoded is not None and index in self.decoded:
            return self.decoded.get(index)
        path, label = self.samples[index]
        img = load_rgb(path)
        return tv_tensors.Image(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)), label

    def __getitem__(self, index: int):
        image, label = self.load(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, label
