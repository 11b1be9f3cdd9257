"""Decoded images kept in memory: each file of a dataset that fits is decoded once, not once per epoch.

The pixels are stored as uint8 in one tensor per field when the samples share a shape (CamVid, CIFAR-10), so the
DataLoader's forked workers read the same pages instead of each holding a copy.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import tv_tensors

from slimcv._console import console, progress_bar

DEFAULT_SHARE = 0.25  # at most this fraction of the memory available now goes to decoded images


@dataclass
class DecodedStore:
    """The untransformed samples of some indices of a file dataset: uint8 images, masks or integer labels."""

    positions: dict[int, int]
    images: torch.Tensor | list[torch.Tensor]
    targets: torch.Tensor | list[Any]
    target_dtype: torch.dtype | None  # a mask's dtype as the dataset loads it (stored narrower); None: labels

    def __contains__(self, index: int) -> bool:
        return index in self.positions

    def get(self, index: int):
        """The sample as the dataset's ``load`` returns it."""
        k = self.positions[index]
        image = tv_tensors.Image(self.images[k])
        target = self.targets[k]
        if isinstance(target, dict):  # a detection target: boxes and labels, kept as loaded
            return image, dict(target)
        if self.target_dtype is None:
            return image, int(target)
        return image, tv_tensors.Mask(target.to(self.target_dtype))

    @property
    def nbytes(self) -> int:
        return _nbytes(self.images) + _nbytes(self.targets)


def _nbytes(x) -> int:
    if torch.is_tensor(x):
        return x.numel() * x.element_size()
    return sum(t.numel() * t.element_size() for t in x if torch.is_tensor(t))


def unwrap_subsets(dataset: Dataset) -> tuple[Dataset, list[int]]:
    """The dataset under any Subsets of ``dataset`` and the indices ``dataset`` reads of it."""
    indices: Sequence[int] | None = None
    while isinstance(dataset, Subset):
        inner = list(dataset.indices)
        indices = inner if indices is None else [inner[i] for i in indices]
        dataset = dataset.dataset
    return dataset, list(indices) if indices is not None else list(range(len(dataset)))


def file_dataset(dataset: Dataset) -> tuple[Any, list[int]] | None:
    """The file dataset (one with ``load(index)``) under ``dataset`` and the indices ``dataset`` reads of it."""
    base, indices = unwrap_subsets(dataset)
    if not hasattr(base, "load") or not hasattr(base, "decoded"):
        return None
    return base, indices


def available_memory() -> int | None:
    """Bytes of memory available now (Linux /proc/meminfo), or None where unknown."""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class _Loads(Dataset):
    """Chunks of decoded samples: fewer, larger transfers from the workers."""

    def __init__(self, base, indices: list[int], chunk: int = 64) -> None:
        self.base, self.indices, self.chunk = base, indices, chunk

    def __len__(self) -> int:
        return -(-len(self.indices) // self.chunk)

    def __getitem__(self, i: int) -> list:
        return [self.one(k) for k in self.indices[i * self.chunk:(i + 1) * self.chunk]]

    def one(self, index: int):
        image, target = self.base.load(index)
        image = image.as_subclass(torch.Tensor)
        if torch.is_tensor(target):
            target = target.as_subclass(torch.Tensor)
            target = target.to(_narrow(target))
        return image, target


def _narrow(mask: torch.Tensor) -> torch.dtype:
    hi, lo = (int(mask.max()), int(mask.min())) if mask.numel() else (0, 0)
    return torch.uint8 if 0 <= lo and hi < 256 else torch.int16 if -2**15 <= lo and hi < 2**15 else mask.dtype


def keep_in_memory(dataset: Dataset, *, workers: int = 0, max_bytes: int | None = None, progress: bool = True,
                   name: str = "data") -> bool:
    """Decode the samples ``dataset`` reads once and keep them in memory; False when it is not a file dataset,
    or its pixels would take more than ``max_bytes`` (default: a quarter of the memory available now)."""
    found = file_dataset(dataset)
    if found is None:
        return False
    base, indices = found
    store = base.decoded
    todo = [i for i in dict.fromkeys(indices) if store is None or i not in store]
    if not todo:
        return True
    limit = max_bytes if max_bytes is not None else int((available_memory() or 0) * DEFAULT_SHARE)
    image, target = _Loads(base, todo).one(todo[0])
    per_sample = image.numel() + (target.numel() * target.element_size() if torch.is_tensor(target) else 0)
    if per_sample * len(todo) > limit:
        console.print(f"[dim]{name}: {len(todo)} decoded samples would take {per_sample * len(todo) / 2**20:.0f} MiB,"
                      f" more than {limit / 2**20:.0f} MiB; images are read from disk every epoch.[/]")
        return False
    images, targets = [], []
    chunks = _Loads(base, todo)
    loader = DataLoader(chunks, batch_size=None, num_workers=min(workers, len(chunks) - 1), shuffle=False)
    with progress_bar(f"decode {name}", len(todo), progress) as bar:
        for chunk in loader:
            for image, target in chunk:
                # a copy: what a worker sends lives in shared memory that holds a file descriptor until freed
                images.append(image.clone())
                targets.append(target.clone() if torch.is_tensor(target) else
                               {k: v.clone() if torch.is_tensor(v) else v for k, v in target.items()}
                               if isinstance(target, dict) else target)
            if bar is not None:
                bar(len(chunk), {})
    new = DecodedStore({i: k for k, i in enumerate(todo)}, _stack(images), _stack(targets),
                       None if not torch.is_tensor(targets[0]) else _loaded_dtype(base))
    base.decoded = new if store is None else _merge(store, new)
    return True


def _loaded_dtype(base) -> torch.dtype:
    return base.load_dtype if hasattr(base, "load_dtype") else torch.int64


def _stack(items: list):
    if items and isinstance(items[0], dict):
        return list(items)
    if items and torch.is_tensor(items[0]):
        if all(t.shape == items[0].shape and t.dtype == items[0].dtype for t in items):
            return torch.stack(items)
        return items
    return torch.tensor(items, dtype=torch.int64)


def _merge(old: DecodedStore, new: DecodedStore) -> DecodedStore:
    offset = len(old.positions)
    positions = {**old.positions, **{i: k + offset for i, k in new.positions.items()}}
    return DecodedStore(positions, _stack([*old.images, *new.images]), _stack([*old.targets, *new.targets]),
                        old.target_dtype)
