"""``slimcv check-data``: scan a dataset, count classes (or boxes), report problems, compute class weights."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from slimcv.errors import SlimcvError


@dataclass
class DataReport:
    """What a scan of one split found."""

    spec: str
    split: str
    task: str
    samples: int
    sizes: dict[str, int]
    class_counts: dict[str, int]
    ignored: int = 0  # segmentation: ignored pixels; detection: boxes kept out of the metric (difficult/crowd)
    problems: list[str] = field(default_factory=list)
    class_weights: list[float] | None = None
    boxes: int | None = None  # detection only, like the fields below
    images_without_boxes: int | None = None
    box_sizes: dict[str, int] | None = None  # COCO's area ranges: small < 32², medium, large > 96²


SMALL, LARGE = 32**2, 96**2


def scan(dataset: Dataset, spec: str, split: str, limit: int | None = None, weights: bool = False) -> DataReport:
    """Load every sample untransformed; each bad one becomes a problem line instead of an exception."""
    info = dataset.info
    n = len(dataset) if limit is None else min(limit, len(dataset))
    # a spread, not the first N: datasets are often sorted by class, and the first files are all one class
    indices = range(len(dataset)) if n == len(dataset) else np.linspace(0, len(dataset) - 1, n).round().astype(int)
    counts = np.zeros(info.num_classes, dtype=np.int64)
    sizes: Counter[str] = Counter()
    ignored = 0
    problems: list[str] = []
    boxes = Counter({"boxes": 0, "images_without_boxes": 0, "small": 0, "medium": 0, "large": 0})
    for i in indices:
        try:
            image, target = dataset.load(int(i))
        except SlimcvError as e:
            problems.append(str(e))
            continue
        sizes[f"{image.shape[-1]}x{image.shape[-2]}"] += 1
        if info.task == "segmentation":
            t = torch.as_tensor(target).flatten()
            ignored += int((t == info.ignore_index).sum())
            valid = t[t != info.ignore_index]
            counts += np.bincount(valid.numpy(), minlength=info.num_classes)[: info.num_classes]
        elif info.task == "detection":
            ignored += _count_boxes(target, counts, boxes)
        else:
            counts[int(target)] += 1
    report = DataReport(spec, split, info.task, n, dict(sizes),
                        {name: int(c) for name, c in zip(info.class_names, counts)}, ignored, problems)
    if weights and info.task == "segmentation":
        report.class_weights = _median_frequency(counts)
    if info.task == "detection":
        report.boxes, report.images_without_boxes = boxes["boxes"], boxes["images_without_boxes"]
        report.box_sizes = {k: boxes[k] for k in ("small", "medium", "large")}
    return report


def _count_boxes(target: dict, counts: np.ndarray, found: Counter) -> int:
    """Add one image's boxes to the per-class counts and the size histogram; returns its crowd/difficult boxes."""
    labels = torch.as_tensor(target["labels"]).long()
    b = torch.as_tensor(target["boxes"]).reshape(-1, 4)
    area = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).numpy()
    counts += np.bincount(labels.numpy(), minlength=len(counts))[: len(counts)]
    found["boxes"] += len(labels)
    found["images_without_boxes"] += int(len(labels) == 0)
    found["small"] += int((area < SMALL).sum())
    found["large"] += int((area > LARGE).sum())
    found["medium"] += int(((area >= SMALL) & (area <= LARGE)).sum())
    return int(torch.as_tensor(target.get("iscrowd", torch.zeros(0))).bool().sum())


def median_frequency_weights(dataset: Dataset, num_classes: int, ignore_index: int = 255) -> list[float]:
    """SegNet's median-frequency balancing: weight_c = median(freq) / freq_c over the training masks."""
    base, indices = _label_source(dataset)
    counts = np.zeros(num_classes, dtype=np.int64)
    for i in indices:
        t = torch.as_tensor(base.load(i)[1]).flatten()
        counts += np.bincount(t[t != ignore_index].numpy(), minlength=num_classes)[:num_classes]
    return _median_frequency(counts)


def _label_source(dataset: Dataset) -> tuple[Any, list[int]]:
    """The dataset that loads raw (image, mask) pairs and the indices into it, through Subset and wrapper layers
    (an offline-KD training set wraps its dataset as ``.base``; a data.subset wraps it as ``.dataset``)."""
    indices = list(range(len(dataset)))
    while not hasattr(dataset, "load"):
        inner = getattr(dataset, "dataset", None)
        inner = getattr(dataset, "base", None) if inner is None else inner
        if inner is None:
            raise SlimcvError(f"Cannot read the masks of {type(dataset).__name__} for class weights; pass explicit "
                              "class_weights (a list, one per class) instead of median_frequency.")
        sub = getattr(dataset, "indices", None)
        indices = [int(sub[i]) for i in indices] if sub is not None else indices
        dataset = inner
    return dataset, indices


def _median_frequency(counts: np.ndarray) -> list[float]:
    freq = counts / max(counts.sum(), 1)
    present = freq[freq > 0]
    if not present.size:
        raise SlimcvError("No labelled pixels found; cannot compute class weights.")
    med = np.median(present)
    return [round(float(med / f), 4) if f > 0 else 0.0 for f in freq]
