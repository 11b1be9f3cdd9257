"""Offline distillation: the teacher's soft maps computed once, stored compactly, read back aligned.

Design (documented in docs/distillation.md):
- The teacher sees each *un-augmented* training image, resized to the training size and normalised.
  Its probabilities (T = 1) are stored at ``scale`` of that size as uint8 (p * 255), fp16, or top-k.
- At training time a map is decoded, resized bilinearly to the image's native size and handed to the
  same ``transforms.v2`` call as the image and mask, typed as a ``tv_tensors.Mask``: geometric
  transforms (rotate, shift, flip, crop, resize) move it exactly like the mask, photometric ones
  (colour jitter) leave it alone — the teacher's answer for the clean image stays the target.
- The cache lives under a key hashed from the teacher weights, the dataset, the preprocessing and the
  storage format; anything different gives a different key, so a stale cache is never read.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from slimcv._console import console, progress_bar
from slimcv._io import atomic_dir, atomic_write_json
from slimcv.errors import SlimcvError


@dataclass(frozen=True)
class CacheFormat:
    """How teacher maps are stored: ``scale`` of the training size, and uint8 / fp16 / top-k values."""

    scale: float = 0.5
    dtype: Literal["uint8", "fp16", "topk"] = "uint8"
    topk: int = 3


AUTO_SCALE_LIMIT = 2 * 2**30  # bytes: above this a full-size cache is stored at half (or quarter) size


def auto_scale(samples: int, num_classes: int, hw: tuple[int, int], dtype: str = "uint8", topk: int = 3,
               limit: int = AUTO_SCALE_LIMIT) -> float:
    """The cache scale for ``scale: auto``: the training size itself when the maps fit in ``limit`` bytes, else
    the largest of 1/2, 1/4, 1/8 that does. Half-size maps blur class boundaries: on 64x64 synthetic shapes a
    student distilled from them ended 6 mIoU below one distilled from full-size maps (docs/distillation.md)."""
    channels = 2 * topk if dtype == "topk" else num_classes
    per_value = 2 if dtype == "fp16" else 1
    for scale in (1.0, 0.5, 0.25):
        if samples * channels * per_value * round(hw[0] * scale) * round(hw[1] * scale) <= limit:
            return scale
    return 0.125


@dataclass
class TeacherCache:
    """An opened cache: ``maps`` is a read-only memmap of shape (N, C or 2k, h, w)."""

    path: Path
    meta: dict[str, Any]
    maps: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    def soft_map(self, index: int, size: tuple[int, int]) -> torch.Tensor:
        """Probabilities (C, H, W) of sample ``index`` resized to ``size``, as uint8 (p*255) or float32."""
        raw = torch.from_numpy(np.array(self.maps[index]))
        fmt = self.meta["format"]
        if fmt["dtype"] == "topk":
            raw = _dense_from_topk(raw, self.num_classes)
        probs = raw.float() / 255.0 if raw.dtype == torch.uint8 else raw.float()
        probs = F.interpolate(probs[None], size=size, mode="bilinear", align_corners=False)[0]
        # fp16 maps are handed to the transforms as float32: rotating an fp16 tensor computes its sampling
        # grid in fp16 and picks different pixels than for the mask (measured: 28 of ~40k pixels off).
        return (probs * 255).round().to(torch.uint8) if fmt["dtype"] != "fp16" else probs


def teacher_fingerprint(teacher: nn.Module) -> str:
    """A hash of the teacher's weights and buffers."""
    h = hashlib.sha256()
    for name, t in sorted(teacher.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def cache_key(teacher: nn.Module, data_id: dict[str, Any], fmt: CacheFormat) -> str:
    payload = json.dumps({"teacher": teacher_fingerprint(teacher), "data": data_id, "format": asdict(fmt)},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def open_cache(path: str | Path) -> TeacherCache:
    path = Path(path)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise SlimcvError(f"{path} is not a complete teacher cache (no meta.json); delete it and run again.")
    try:
        meta = json.loads(meta_file.read_text())
        maps = np.load(path / "maps.npy", mmap_mode="r")
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise SlimcvError(f"The teacher cache {path} is damaged ({str(e).splitlines()[0][:120]}); delete it and run "
                          "again.") from e
    if not isinstance(meta, dict) or maps.shape[0] != meta.get("samples"):
        raise SlimcvError(f"The teacher cache {path} is damaged (its maps do not match its meta.json); delete it and "
                          "run again.")
    return TeacherCache(path, meta, maps)


@torch.inference_mode()
def build_cache(teacher: nn.Module, dataset, root: str | Path, *, size: tuple[int, int] | None,
                mean, std, num_classes: int, fmt: CacheFormat, data_id: dict[str, Any],
                device: torch.device | None = None, batch_size: int = 8) -> TeacherCache:
    """Run the teacher once over ``dataset`` (its ``load(i)`` gives the raw image) and store the maps.

    Reuses an existing cache with the same key; a different teacher, data or format gets a new one."""
    key = cache_key(teacher, data_id, fmt)
    final = Path(root) / key
    if (final / "meta.json").is_file():
        try:
            cache = open_cache(final)
            console.print(f"Teacher cache {final} matches this teacher and data; reusing it.")
            return cache
        except SlimcvError as e:  # slimcv's own cache (its key names this teacher and data): built again
            console.print(f"[yellow]{e} Building it again.[/]")
    device = device or torch.device("cpu")
    teacher.eval().to(device)
    pre = v2.Compose(([v2.Resize(size, antialias=True)] if size else [])
                     + [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])
    start = time.perf_counter()
    with atomic_dir(final) as tmp:
        maps = None
        n = len(dataset)
        with progress_bar("teacher cache", n) as bar:
            for lo in range(0, n, batch_size):
                imgs = torch.stack([pre(dataset.load(i)[0]) for i in range(lo, min(n, lo + batch_size))])
                probs = F.softmax(teacher(imgs.to(device)).float(), dim=1).cpu()
                if probs.shape[1] != num_classes:
                    raise SlimcvError(f"The teacher predicts {probs.shape[1]} classes but the data has "
                                      f"{num_classes}; use a teacher trained on this dataset.")
                enc = encode(probs, fmt)
                if maps is None:
                    maps = np.lib.format.open_memmap(tmp / "maps.npy", mode="w+", dtype=enc.dtype,
                                                     shape=(n, *enc.shape[1:]))
                maps[lo:lo + len(enc)] = enc
                if bar:
                    bar(len(enc), {})
        maps.flush()
        del maps
        meta = {"key": key, "num_classes": num_classes, "samples": n, "format": asdict(fmt), "data": data_id,
                "teacher": teacher_fingerprint(teacher), "build_time_s": time.perf_counter() - start,
                "bytes": (tmp / "maps.npy").stat().st_size}
        atomic_write_json(tmp / "meta.json", meta)
    console.print(f"Teacher cache: {n} maps, {meta['bytes'] / 2**20:.1f} MiB, {meta['build_time_s']:.1f} s -> {final}")
    return open_cache(final)


def encode(probs: torch.Tensor, fmt: CacheFormat) -> np.ndarray:
    """(N, C, H, W) probabilities -> the stored array at ``fmt.scale``."""
    if fmt.scale != 1.0:
        h, w = probs.shape[-2:]
        size = (max(1, round(h * fmt.scale)), max(1, round(w * fmt.scale)))
        probs = F.interpolate(probs, size=size, mode="area")
    if fmt.dtype == "fp16":
        return probs.half().numpy()
    if fmt.dtype == "uint8":
        return (probs * 255).round().to(torch.uint8).numpy()
    k = min(fmt.topk, probs.shape[1])
    if probs.shape[1] > 255:
        raise SlimcvError("top-k storage holds class indices in uint8: it supports at most 255 classes.")
    val, idx = probs.topk(k, dim=1)
    return torch.cat([idx.to(torch.uint8), (val * 255).round().to(torch.uint8)], dim=1).numpy()


def _dense_from_topk(raw: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(2k, h, w) uint8 [indices; probabilities] -> (C, h, w) float; the missing mass is spread evenly."""
    k = raw.shape[0] // 2
    idx, val = raw[:k].long(), raw[k:].float() / 255.0
    rest = ((1.0 - val.sum(0)).clamp_min(0) / max(num_classes - k, 1))
    dense = rest.expand(num_classes, *rest.shape).clone()
    dense.scatter_(0, idx, val)
    return dense


class CachedTeacherDataset(Dataset):
    """Wraps a segmentation dataset: yields ``(image, (mask, soft_map))`` with the map transformed
    together with the image and mask, so all three stay aligned."""

    def __init__(self, base, cache: TeacherCache, transform) -> None:
        if len(base) != cache.meta["samples"]:
            raise SlimcvError(f"Teacher cache {cache.path} holds {cache.meta['samples']} maps but the dataset has "
                              f"{len(base)} samples; delete the cache to rebuild it.")
        self.base, self.cache, self.transform = base, cache, transform
        self.info = base.info

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        image, mask = self.base.load(index)
        soft = tv_tensors.Mask(self.cache.soft_map(index, tuple(image.shape[-2:])))
        image, mask, soft = self.transform(image, mask, soft)
        return image, (mask, soft.as_subclass(torch.Tensor))


def soft_to_logits(soft: torch.Tensor) -> torch.Tensor:
    """Stored probabilities (uint8 p*255 or fp16) -> log-probabilities, usable wherever logits are."""
    p = soft.float() / 255.0 if soft.dtype == torch.uint8 else soft.float()
    return p.clamp_min(1e-4).log()
