"""``synthetic-shapes``: textured images with circles, rectangles and triangles, made on the fly from a seed."""
from __future__ import annotations

import colorsys
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset
from torchvision import tv_tensors

from slimcv.data._base import DatasetInfo
from slimcv.data._registry import DATASETS
from slimcv.data.detection import detection_info, make_target
from slimcv.errors import SlimcvError

SHAPES = ("circle", "rectangle", "triangle")
_SPLIT_OFFSET = {"train": 0, "val": 10_000_000, "test": 20_000_000}
_TASKS = ("segmentation", "classification", "detection")
MIN_SHAPE_PIXELS = 20  # a detection shape mostly hidden under later shapes keeps no box below this many pixels


def _info(task: str, size: int) -> DatasetInfo:
    if task == "segmentation":
        return DatasetInfo(name="synthetic-shapes", task="segmentation", class_names=("background", *SHAPES),
                           palette=((0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200)),
                           mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), default_augment=("hflip", "shift"),
                           native_size=(size, size))
    if task == "detection":
        return detection_info("synthetic-shapes", SHAPES, native_size=(size, size))
    return DatasetInfo(name="synthetic-shapes", task="classification", class_names=SHAPES, mean=(0.5, 0.5, 0.5),
                       std=(0.25, 0.25, 0.25), default_augment=("hflip",), native_size=(size, size))


class SyntheticShapes(Dataset):
    """Deterministic by (seed, split, index): the same sample every time, on every machine."""

    def __init__(self, task: str, split: str, size: int, length: int, seed: int, transform: Callable | None):
        if task not in _TASKS:
            raise SlimcvError(f"synthetic-shapes task {task!r} is unknown; use 'segmentation', 'classification' or "
                              "'detection'.")
        if split not in _SPLIT_OFFSET:
            raise SlimcvError(f"synthetic-shapes split {split!r} is unknown; use train, val or test.")
        if size < 24:
            raise SlimcvError(f"synthetic-shapes size {size} is too small to draw shapes; use 24 or more.")
        self.task, self.split, self.size, self.length, self.seed = task, split, size, length, seed
        self.info = _info(task, size)
        self.transform = transform

    def __len__(self) -> int:
        return self.length

    def load(self, index: int):
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, _SPLIT_OFFSET[self.split] + index])
        if self.task == "detection":
            img, _, labels, shapes = _draw(rng, self.size, n_shapes=int(rng.integers(1, 5)), instances=True)
            image = tv_tensors.Image(torch.from_numpy(img).permute(2, 0, 1).contiguous())
            boxes, kept = _shape_boxes(shapes, len(labels))
            return image, make_target(boxes, np.asarray(labels)[kept], np.zeros(len(kept)), img.shape[:2], index)
        img, mask, labels, _ = _draw(rng, self.size, n_shapes=1 if self.task == "classification" else None)
        image = tv_tensors.Image(torch.from_numpy(img).permute(2, 0, 1).contiguous())
        if self.task == "classification":
            return image, labels[0]
        return image, tv_tensors.Mask(torch.from_numpy(mask.astype(np.int64)))

    def __getitem__(self, index: int):
        image, target = self.load(index)
        if self.transform is None:
            return image, target
        if self.task == "classification":
            return self.transform(image), target
        return self.transform(image, target)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-frequency colour noise plus random stripes: a texture the model has to learn to ignore."""
    coarse = rng.uniform(70, 170, size=(4, 4, 3)).astype(np.float32)
    bg = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.BILINEAR), np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    angle, freq = rng.uniform(0, np.pi), rng.uniform(0.2, 0.6)
    stripes = np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle)))[..., None] * rng.uniform(10, 35)
    noise = rng.normal(0, 12, size=(size, size, 3))
    return np.clip(bg + stripes + noise, 0, 255)


def _shape_colour(rng: np.random.Generator, label: int) -> tuple[int, int, int]:
    # Hue leans toward the class (centres a third of the circle apart, +-0.22 wide, so neighbours overlap):
    # colour is a hint, shape settles it; that leaves room for a teacher to know more than a student.
    hue = (label / len(SHAPES) + rng.uniform(-0.22, 0.22)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.6, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _shape_boxes(shapes: np.ndarray, n: int) -> tuple[np.ndarray, list[int]]:
    """XYXY boxes around the pixels each shape kept in the final picture (later shapes cover earlier ones), and
    the indices of the shapes with a box: those left with fewer than MIN_SHAPE_PIXELS pixels have none."""
    boxes, kept = [], []
    for k in range(n):
        ys, xs = np.nonzero(shapes == k + 1)
        if ys.size >= MIN_SHAPE_PIXELS:
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])  # pixel i spans [i, i + 1)
            kept.append(k)
    return np.array(boxes, np.float32).reshape(-1, 4), kept


def _draw(rng: np.random.Generator, size: int, n_shapes: int | None, instances: bool = False):
    """Image, class mask, labels and (with ``instances``) a mask of shape numbers 1..n; the random draws are the
    same either way."""
    img = Image.fromarray(_background(rng, size).astype(np.uint8))
    mask = Image.new("L", (size, size), 0)
    d_img, d_mask = ImageDraw.Draw(img), ImageDraw.Draw(mask)
    inst = Image.new("L", (size, size), 0) if instances else None
    d_inst = ImageDraw.Draw(inst) if instances else None
    labels = []
    for _ in range(n_shapes or int(rng.integers(1, 4))):
        label = int(rng.integers(0, len(SHAPES)))
        r = rng.uniform(0.12, 0.24) * size
        cx, cy = rng.uniform(r, size - r, size=2)
        colour = _shape_colour(rng, label)
        if label == 0:
            box = [cx - r, cy - r, cx + r, cy + r]
            d_img.ellipse(box, fill=colour)
            d_mask.ellipse(box, fill=1)
            if d_inst:
                d_inst.ellipse(box, fill=len(labels) + 1)
        elif label == 1:
            w, h = r * rng.uniform(0.7, 1.0), r * rng.uniform(0.7, 1.0)
            box = [cx - w, cy - h, cx + w, cy + h]
            d_img.rectangle(box, fill=colour)
            d_mask.rectangle(box, fill=2)
            if d_inst:
                d_inst.rectangle(box, fill=len(labels) + 1)
        else:
            a = rng.uniform(0, 2 * np.pi)
            pts = [(cx + r * np.cos(a + k * 2 * np.pi / 3), cy + r * np.sin(a + k * 2 * np.pi / 3)) for k in range(3)]
            d_img.polygon(pts, fill=colour)
            d_mask.polygon(pts, fill=3)
            if d_inst:
                d_inst.polygon(pts, fill=len(labels) + 1)
        labels.append(label)
    return np.asarray(img).copy(), np.asarray(mask).copy(), labels, None if inst is None else np.asarray(inst).copy()


@DATASETS.register("synthetic-shapes", task="segmentation")
def synthetic_shapes(
    root: str | None = None,
    split: str = "train",
    transform: Callable | None = None,
    task: str | None = None,
    size: int = 64,
    length: int | None = None,
    seed: int = 0,
) -> SyntheticShapes:
    """Generated data, no download: 'synthetic-shapes' (segmentation), ':classification' or ':detection'."""
    task = task or root or "segmentation"
    length = length or (512 if split == "train" else 128)
    return SyntheticShapes(task, split, size, length, seed, transform)
