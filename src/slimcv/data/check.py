"""``slimcv check-data``: scan a dataset, count classes, report problems, compute class weights."""
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
    ignored: int = 0
    problems: list[str] = field(default_factory=list)
    class_weights: list[float] | None = None


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
        else:
            counts[int(target)] += 1
    report = DataReport(spec, split, info.task, n, dict(sizes),
                        {name: int(c) for name, c in zip(info.class_names, counts)}, ignored, problems)
    if weights and info.task == "segmentation":
        report.class_weights = _median_frequency(counts)
    return report


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
