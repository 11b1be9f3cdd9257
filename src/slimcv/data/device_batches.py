"""Training batches made where the model trains: decoded uint8 samples kept on the device, a whole batch augmented
at once.

On a GPU the per-sample loader (decode, transform, collate, copy) is what limits training, not the GPU. When the
decoded training set fits in a share of the device's memory, its pixels move there once as uint8, and every batch
is gathered, warped and normalised on the device: flips, scale-crop, shifts, pad-crop and rotation become one
affine warp per image (``grid_sample``), masks follow the same warp with nearest sampling and ``ignore`` where the
warp uncovers them, and colour jitter scales per image. The sample order is the CPU loader's (the same
``DistributedSampler``, so DDP ranks split it the same way), and the random parameters follow the distributions of
the torchvision presets they replace; a test compares the two paths' statistics. A detector's boxes follow the
same warp (each box becomes the box around its warped corners, clamped, and dropped below one pixel, as
``SanitizeBoundingBoxes`` does). Datasets whose samples differ in size keep the per-sample loader.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

from slimcv._console import console
from slimcv.data.memory import unwrap_subsets
from slimcv.data.presets import ClassificationPresetTrain, DetectionPresetTrain, SegmentationPresetTrain

DEVICE_SHARE = 0.25  # at most this fraction of the device's free memory goes to the decoded training set


@dataclass(frozen=True)
class BatchAugment:
    """A training preset's settings, applied to whole batches."""

    size: tuple[int, int] | None
    augment: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    ignore_index: int | None  # None: classification (labels, not masks)
    rotate_degrees: float
    shift_fraction: float
    scale_range: tuple[float, float]
    ratio_range: tuple[float, float] | None  # None: the crop keeps the output's aspect ratio
    reflect: bool  # pad-crop pads by reflection (classification) instead of zeros / ignore
    jitter: tuple[float, float, float, float]  # brightness, contrast, saturation, hue
    boxes: bool = False  # detection: targets are padded (N, K, 6) rows x0, y0, x1, y1, label, iscrowd (label -1: none)


def batch_augment_for(transform) -> BatchAugment | None:
    """The batched form of a training preset, or None for a transform this module does not reproduce."""
    if isinstance(transform, SegmentationPresetTrain):
        s = transform.settings
        size = s["size"]
        return BatchAugment(size, tuple(s["augment"]), tuple(s["mean"]), tuple(s["std"]), s["ignore_index"],
                            s["rotate_degrees"], s["shift_fraction"], tuple(s["scale_range"]), None, False,
                            (0.3, 0.3, 0.3, 0.02))
    if isinstance(transform, DetectionPresetTrain):
        s = transform.settings
        size = s["size"]
        if "scale_crop" in s["augment"] and size is None:  # RandomIoUCrop: not reproduced here
            return None
        aspect = size[1] / size[0] if size else 1.0
        return BatchAugment(size, tuple(s["augment"]), tuple(s["mean"]), tuple(s["std"]), None, s["rotate_degrees"],
                            s["shift_fraction"], tuple(s["scale_range"]), (0.75 * aspect, aspect / 0.75), False,
                            (0.3, 0.3, 0.3, 0.02), boxes=True)
    if isinstance(transform, ClassificationPresetTrain):
        s = transform.settings
        # as the preset: crops only with a training size; pad-crop pads by reflection, rotation and shifts with 0
        augment = tuple(a for a in s["augment"] if s["size"] or a not in ("scale_crop", "pad_crop"))
        reflect = "pad_crop" in augment and not {"rotate", "shift", "scale_crop"} & set(augment)
        return BatchAugment(s["size"], augment, tuple(s["mean"]), tuple(s["std"]), None, 15.0, 0.1,
                            (0.08, 1.0), (3 / 4, 4 / 3), reflect, (0.3, 0.3, 0.3, 0.0))
    return None


class DeviceBatches:
    """An iterable of (images, targets) batches made on ``device``; ``sampler.set_epoch(e)`` as for a DataLoader."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, aug: BatchAugment, batch_size: int, *,
                 seed: int = 0, distributed: bool = False) -> None:
        self.images, self.targets, self.aug, self.batch_size = images, targets, aug, batch_size
        if aug.size is not None and "scale_crop" not in aug.augment and tuple(images.shape[-2:]) != aug.size:
            # the preset resizes first: done once here (antialiased like v2.Resize), not every epoch
            self.images = _resize_uint8(images, aug.size)
            if aug.boxes:
                scale = torch.tensor([aug.size[1] / images.shape[-1], aug.size[0] / images.shape[-2]] * 2,
                                     device=targets.device)
                self.targets = torch.cat([targets[..., :4] * scale, targets[..., 4:]], -1)
            else:
                self.targets = targets if aug.ignore_index is None else _resize_nearest(targets, aug.size)
        rank = {} if distributed else {"num_replicas": 1, "rank": 0}
        self.sampler = DistributedSampler(range(len(images)), shuffle=True, seed=seed, drop_last=True, **rank)
        self.generator = torch.Generator(device=images.device)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def __iter__(self):
        order = torch.tensor(list(self.sampler), device=self.images.device)
        self.generator.manual_seed(self.seed * 100_003 + self.sampler.epoch * 1_009 + self.sampler.rank)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield augment_batch(self.images[idx], self.targets[idx], self.aug, self.generator)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One augmented batch of fixed samples (for the speed probe)."""
        idx = torch.linspace(0, len(self.images) - 1, min(self.batch_size, len(self.images)),
                             device=self.images.device).long()
        gen = torch.Generator(device=self.images.device).manual_seed(self.seed)
        return augment_batch(self.images[idx], self.targets[idx], self.aug, gen)

    @property
    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size() + self.targets.numel() * self.targets.element_size()


def augment_batch(images: torch.Tensor, targets: torch.Tensor, aug: BatchAugment, gen: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch: uint8 (N, 3, H, W) images and (N, H, W) masks or (N,) labels -> normalised float images and
    int64 targets, augmented as the preset would (each image its own random draw)."""
    n, device = images.shape[0], images.device
    out_hw = aug.size or tuple(images.shape[-2:])
    warp = _affine(n, tuple(images.shape[-2:]), out_hw, aug, gen, device)
    x = images.float()
    valid = None
    if warp is not None:
        theta, partial = warp
        grid = F.affine_grid(theta, [n, 3, *out_hw], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection" if aug.reflect else "zeros",
                          align_corners=False)
        for q in partial if not aug.reflect else ():
            inside = (F.affine_grid(q, [n, 1, *out_hw], align_corners=False).abs() <= 1).all(-1)
            valid = inside if valid is None else valid & inside
        if valid is not None:
            x = x * valid[:, None]
    if "color_jitter" in aug.augment:
        x = _jitter(x, aug.jitter, gen)
    mean = torch.tensor(aug.mean, device=device).view(1, -1, 1, 1) * 255
    std = torch.tensor(aug.std, device=device).view(1, -1, 1, 1) * 255
    x = (x - mean) / std
    if aug.boxes:
        return x, _warped_boxes(targets, warp, tuple(images.shape[-2:]), out_hw)
    if aug.ignore_index is None:
        return x, targets.long()
    if warp is not None:  # masks: nearest, and what the warp uncovers is ignored (sampled as 0 after the +1 shift)
        m = F.grid_sample(targets[:, None].float() + 1, grid, mode="nearest", padding_mode="zeros",
                          align_corners=False)[:, 0].long()
        if valid is not None:
            m = m * valid
        targets = torch.where(m == 0, aug.ignore_index, m - 1)
    return x, targets.long()


def _warped_boxes(rows: torch.Tensor, warp: tuple[torch.Tensor, list[torch.Tensor]] | None,
                  in_hw: tuple[int, int], out_hw: tuple[int, int]) -> list[dict[str, torch.Tensor]]:
    """Each image's boxes through the warp's steps in order (crop, rotation, shift, pad-crop, flip): after each, the
    box around its four moved corners, clamped to that step's canvas, as the per-sample transforms do; those under
    a pixel wide or high at the end are dropped. One target dict per image."""
    (h_in, w_in), (h, w) = in_hw, out_hw
    boxes = rows[..., :4].float()
    if warp is not None:
        theta, partial = warp
        square = lambda q: torch.cat([q, torch.tensor([0.0, 0.0, 1.0], device=q.device).expand(len(q), 1, 3)], 1)  # noqa: E731
        # every canvas as a map from the output's normalised coordinates into it: the input, each intermediate one
        canvases = [square(theta), *[square(q) for q in reversed(partial)], torch.eye(3, device=theta.device)
                    .expand(len(theta), 3, 3)]
        scale = torch.tensor([2 / w_in, 2 / h_in] * 2, device=boxes.device)
        b = boxes * scale - 1  # normalised input coordinates
        for before, after in zip(canvases, canvases[1:]):
            step = after @ torch.linalg.inv(before)
            x0, y0, x1, y1 = b.unbind(-1)
            corners = torch.stack([torch.stack(c, -1) for c in ((x0, y0), (x1, y0), (x0, y1), (x1, y1))], -2)
            moved = torch.einsum("nij,nkcj->nkci", step, torch.cat([corners, torch.ones_like(corners[..., :1])], -1))
            b = torch.stack([moved[..., 0].amin(-1), moved[..., 1].amin(-1), moved[..., 0].amax(-1),
                             moved[..., 1].amax(-1)], -1).clamp(-1, 1)
        boxes = (b + 1) * torch.tensor([w / 2, h / 2] * 2, device=b.device)
    keep = (rows[..., 4] >= 0) & (boxes[..., 2] - boxes[..., 0] >= 1) & (boxes[..., 3] - boxes[..., 1] >= 1)
    return [{"boxes": b[k], "labels": r[k, 4].long(), "iscrowd": r[k, 5].long()}
            for b, r, k in zip(boxes, rows, keep)]


def _uniform(n: int, lo: float, hi: float, gen, device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, device=device)


def _affine(n: int, in_hw: tuple[int, int], out_hw: tuple[int, int], aug: BatchAugment, gen, device
            ) -> tuple[torch.Tensor, list[torch.Tensor]] | None:
    """(N, 2, 3) maps from output to input coordinates (normalised, as ``affine_grid`` takes), and the partial maps
    after each step that can uncover pixels (pad-crop, shift, rotation: what one step uncovers stays uncovered
    through the next, as in the per-sample presets), or None for no warp."""
    a = aug.augment
    if not any(k in a for k in ("scale_crop", "rotate", "shift", "pad_crop", "hflip")):
        return None
    (h_in, w_in), (h, w) = in_hw, out_hw
    eye = lambda: torch.eye(3, device=device).repeat(n, 1, 1)  # noqa: E731
    m = eye()  # built from the last operation backwards (inverse maps)
    partial: list[torch.Tensor] = []
    if "hflip" in a:
        flip = torch.rand(n, generator=gen, device=device) < 0.5
        m[:, 0, 0] = torch.where(flip, -1.0, 1.0)
    if "pad_crop" in a:
        p = max(1, h // 8)
        m = _shift(torch.randint(-p, p + 1, (n, 2), generator=gen, device=device).float(), h, w) @ m
        partial.append(m)
    if "shift" in a:
        dx = torch.round(_uniform(n, -aug.shift_fraction * w, aug.shift_fraction * w, gen, device))
        dy = torch.round(_uniform(n, -aug.shift_fraction * h, aug.shift_fraction * h, gen, device))
        m = _shift(torch.stack([dx, dy], 1), h, w) @ m
        partial.append(m)
    if "rotate" in a:
        angle = _uniform(n, -aug.rotate_degrees, aug.rotate_degrees, gen, device) * math.pi / 180
        cos, sin = torch.cos(angle), torch.sin(angle)
        r = eye()  # a rotation in pixels, written in normalised coordinates
        r[:, 0, 0], r[:, 0, 1], r[:, 1, 0], r[:, 1, 1] = cos, -sin * h / w, sin * w / h, cos
        m = r @ m
        partial.append(m)
    if "scale_crop" in a:  # the output spans the crop (top, left, height, width in input pixels)
        top, left, ch, cw = _crops(n, (h_in, w_in), (h, w), aug, gen, device).unbind(1)
        c = eye()
        c[:, 0, 0], c[:, 1, 1] = cw / w_in, ch / h_in
        c[:, 0, 2] = (2 * left + cw) / w_in - 1
        c[:, 1, 2] = (2 * top + ch) / h_in - 1
        m = c @ m
    return m[:, :2], [q[:, :2] for q in partial]


def _shift(pixels: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse of moving the content by ``pixels`` (N, 2: x, y), in normalised coordinates."""
    t = torch.eye(3, device=pixels.device).repeat(len(pixels), 1, 1)
    t[:, 0, 2], t[:, 1, 2] = -2 * pixels[:, 0] / w, -2 * pixels[:, 1] / h
    return t


def _crops(n: int, in_hw: tuple[int, int], out_hw: tuple[int, int], aug: BatchAugment, gen, device) -> torch.Tensor:
    """RandomResizedCrop's boxes, drawn for a whole batch: up to 10 tries each, else the whole image."""
    h_in, w_in = in_hw
    area = h_in * w_in
    tries = 10
    lo, hi = aug.ratio_range or ((out_hw[1] / out_hw[0],) * 2)
    target = area * _uniform(n * tries, *aug.scale_range, gen, device)
    ratio = torch.exp(_uniform(n * tries, math.log(lo), math.log(hi), gen, device))
    cw = torch.round(torch.sqrt(target * ratio)).view(n, tries)
    ch = torch.round(torch.sqrt(target / ratio)).view(n, tries)
    ok = (cw > 0) & (cw <= w_in) & (ch > 0) & (ch <= h_in)
    first = torch.where(ok.any(1), ok.float().argmax(1), -1)
    pick = first.clamp(min=0)
    cw, ch = cw.gather(1, pick[:, None])[:, 0], ch.gather(1, pick[:, None])[:, 0]
    cw, ch = torch.where(first >= 0, cw, float(w_in)), torch.where(first >= 0, ch, float(h_in))
    top = torch.floor(torch.rand(n, generator=gen, device=device) * (h_in - ch + 1))
    left = torch.floor(torch.rand(n, generator=gen, device=device) * (w_in - cw + 1))
    return torch.stack([top, left, ch, cw], 1)


def _jitter(x: torch.Tensor, jitter: tuple[float, float, float, float], gen) -> torch.Tensor:
    """ColorJitter's brightness, contrast and saturation (and a small hue turn), one draw per image."""
    n, device = x.shape[0], x.device
    b, c, s, hue = jitter
    gray = lambda t: (0.299 * t[:, 0] + 0.587 * t[:, 1] + 0.114 * t[:, 2])[:, None]  # noqa: E731
    factor = lambda amount: _uniform(n, 1 - amount, 1 + amount, gen, device).view(n, 1, 1, 1)  # noqa: E731
    ops = {
        0: lambda x: (x * factor(b)).clamp(0, 255),
        1: lambda x: (lambda f: f * x + (1 - f) * gray(x).mean((2, 3), keepdim=True))(factor(c)).clamp(0, 255),
        2: lambda x: (lambda f: f * x + (1 - f) * gray(x))(factor(s)).clamp(0, 255),
        3: lambda x: _hue(x, _uniform(n, -hue, hue, gen, device)) if hue else x,
    }
    for k in torch.randperm(4, generator=gen, device=device).tolist():  # a random order, as ColorJitter draws
        x = ops[k](x)
    return x


def _hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """A turn about the grey axis (YIQ), the batched stand-in for an HSV hue shift of ``turns`` of the circle."""
    angle = turns * 2 * math.pi
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=x.device)
    cos, sin = torch.cos(angle), torch.sin(angle)
    turn = torch.zeros(len(x), 3, 3, device=x.device)
    turn[:, 0, 0], turn[:, 1, 1], turn[:, 2, 2], turn[:, 1, 2], turn[:, 2, 1] = 1, cos, cos, -sin, sin
    mat = torch.linalg.inv(to_yiq) @ turn @ to_yiq
    return torch.einsum("nij,njhw->nihw", mat, x).clamp(0, 255)


def _resize_uint8(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    out = F.interpolate(images.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def _resize_nearest(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(masks[:, None].float(), size=size, mode="nearest")[:, 0].to(masks.dtype)


def device_batches(dataset: Dataset, batch_size: int, device: torch.device, *, mode: str = "auto", seed: int = 0,
                   distributed: bool = False, quiet: bool = False) -> DeviceBatches | None:
    """The batched path for ``dataset`` on ``device``, or None for the per-sample loader. ``mode`` "auto" takes it
    on CUDA when the decoded training set fits in DEVICE_SHARE of the free device memory; "on" wherever it can
    (also on a CPU); "off" never."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    base, indices = _loadable(dataset)
    aug = batch_augment_for(getattr(base, "transform", None)) if base is not None else None
    first = base.load(indices[0]) if aug is not None else None
    if first is None or not torch.is_tensor(first[0]) or isinstance(first[1], dict) != aug.boxes:
        if mode == "on" and not quiet:
            console.print("[dim]batched augmentation: the training set is not a segmentation, classification or "
                          "detection dataset with a preset slimcv knows; using the per-sample loader.[/]")
        return None
    per_sample = first[0].numel() + (first[1].numel() if torch.is_tensor(first[1]) else 8 if not aug.boxes else 96)
    need = per_sample * len(indices)
    if device.type == "cuda" and mode == "auto" and need > DEVICE_SHARE * torch.cuda.mem_get_info(device)[0]:
        return None
    stacked = _stacked(base, indices)
    if stacked is None:
        if mode == "on" and not quiet:
            console.print("[dim]batched augmentation: the training images differ in size; using the per-sample "
                          "loader.[/]")
        return None
    if not quiet:
        console.print(f"[dim]batched augmentation on {device.type}: {len(indices)} decoded samples "
                      f"({need / 2**20:.0f} MiB) held there as uint8[/]")
    images, targets = (t.to(device) for t in stacked)
    return DeviceBatches(images, targets, aug, batch_size, seed=seed, distributed=distributed)


def _loadable(dataset: Dataset) -> tuple[object | None, list[int]]:
    """The dataset under any Subsets that loads untransformed samples (``load(i)``), and the indices read of it."""
    base, indices = unwrap_subsets(dataset)
    return (base, indices) if hasattr(base, "load") else (None, [])


def _stacked(base, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """uint8 images (N, 3, H, W) and uint8/int16 masks or int64 labels, from the decoded store where it holds them,
    else decoded now (once, not once per epoch); None when the samples differ in size."""
    store = getattr(base, "decoded", None)
    if store is not None and torch.is_tensor(store.images) and torch.is_tensor(store.targets) \
            and all(i in store for i in indices):
        rows = torch.tensor([store.positions[i] for i in indices])
        return store.images[rows], store.targets[rows]
    samples = [base.load(i) for i in indices]
    images = [im.as_subclass(torch.Tensor) for im, _ in samples]
    if any(im.shape != images[0].shape for im in images):
        return None
    targets = [t for _, t in samples]
    if isinstance(targets[0], dict):  # boxes: one padded row per box
        return torch.stack(images), _box_rows(targets)
    if torch.is_tensor(targets[0]):
        masks = torch.stack([t.as_subclass(torch.Tensor) for t in targets])
        return torch.stack(images), masks.to(torch.uint8 if 0 <= int(masks.min()) and int(masks.max()) < 256
                                             else torch.int16)
    return torch.stack(images), torch.tensor(targets, dtype=torch.int64)


def _box_rows(targets: list[dict]) -> torch.Tensor:
    """Target dicts -> (N, K, 6) float rows x0, y0, x1, y1, label, iscrowd, padded with label -1."""
    k = max(1, max(len(t["labels"]) for t in targets))
    rows = torch.zeros(len(targets), k, 6)
    rows[..., 4] = -1
    for i, t in enumerate(targets):
        n = len(t["labels"])
        rows[i, :n, :4] = t["boxes"].as_subclass(torch.Tensor).float()
        rows[i, :n, 4] = t["labels"].float()
        rows[i, :n, 5] = t.get("iscrowd", torch.zeros(n)).float()
    return rows
