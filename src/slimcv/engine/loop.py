"""The training engine: one epoch of training and one evaluation pass, shared by every stage.

A stage plugs in its loss as an *objective*: ``objective(model, images, targets) -> dict`` holding a
scalar ``"loss"`` (summed into the step) and any other named terms to log. ``targets`` is whatever the
loader yields beside the images (a label tensor, or a tuple such as mask + cached teacher map). Distillation passes an
objective that also runs (or reads) the teacher; fine-tuning after pruning passes the plain one.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from slimcv.errors import SlimcvError

from slimcv.engine.metrics import ConfusionMatrix, TopK

Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


class SupervisedLoss(nn.Module):
    """Cross-entropy on hard labels; segmentation logits are resized to the mask when sizes differ."""

    def __init__(self, ignore_index: int = 255, class_weights: Sequence[float] | None = None,
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", torch.tensor(class_weights, dtype=torch.float32) if class_weights else None)

    def forward(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = model(images)
        return {"loss": self.ce(logits, targets), "logits": logits}

    def ce(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = match_size(logits, targets)
        if not bool((targets != self.ignore_index).any()):  # nothing labelled in the batch: no term (not NaN)
            return logits.float().sum() * 0.0
        return F.cross_entropy(logits.float(), targets, weight=self.weight, ignore_index=self.ignore_index,
                               label_smoothing=self.label_smoothing)


def to_device(obj, device: torch.device):
    """Move a tensor, or a tuple/list/dict of tensors (e.g. mask + cached teacher map), to ``device``."""
    if torch.is_tensor(obj):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def match_size(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Bilinearly resize (N, C, h, w) logits to the (N, H, W) target size when they differ."""
    if logits.ndim == 4 and logits.shape[-2:] != targets.shape[-2:]:
        return F.interpolate(logits, size=targets.shape[-2:], mode="bilinear", align_corners=False)
    return logits


def autocast(device: torch.device, amp: str):
    """An autocast context for 'fp16'/'bf16', or a no-op for 'none'."""
    if amp == "none":
        return nullcontext()
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


class NonFiniteLoss(SlimcvError, FloatingPointError):
    """The loss became NaN or infinite: a user-fixable setting (learning rate, clipping)."""


def train_one_epoch(
    model: nn.Module,
    objective: Objective,
    loader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    device: torch.device,
    *,
    amp: str = "none",
    scaler: torch.amp.GradScaler | None = None,
    clip_grad_norm: float | None = None,
    channels_last: bool = False,
    progress=None,
) -> dict[str, float]:
    """One pass over ``loader``; returns the mean of every loss term and images/s."""
    model.train()
    sums: dict[str, float] = {}
    seen, start = 0, time.perf_counter()
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = to_device(targets, device)
        with autocast(device, amp):
            terms = objective(model, images, targets)
        loss = terms["loss"]
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"The training loss became {loss.item()}; lower the learning rate (--lr) or set "
                                "clip_grad_norm (--set clip_grad_norm=1.0).")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if clip_grad_norm:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        n = images.shape[0]
        seen += n
        for k, v in terms.items():
            if k != "logits" and v.ndim == 0:
                sums[k] = sums.get(k, 0.0) + v.item() * n
        if progress is not None:
            progress(n, {"loss": sums["loss"] / seen, "lr": optimizer.param_groups[0]["lr"]})
    elapsed = time.perf_counter() - start
    out = {k: v / max(seen, 1) for k, v in sums.items()}
    out["images_per_s"] = seen / elapsed if elapsed > 0 else 0.0
    return out


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader,
    device: torch.device,
    *,
    task: str,
    num_classes: int,
    ignore_index: int = 255,
    class_names: Sequence[str] | None = None,
    amp: str = "none",
    channels_last: bool = False,
    progress=None,
) -> dict:
    """Metrics over ``loader``: segmentation at the masks' resolution, detection as COCO mAP, reduced across
    processes."""
    model.eval()
    if task == "detection":
        from slimcv.engine.detection import evaluate_detection

        return evaluate_detection(model, loader, device, num_classes=num_classes, class_names=class_names, amp=amp,
                                  progress=progress, autocast=autocast)
    cm = ConfusionMatrix(num_classes, ignore_index if task == "segmentation" else None)
    topk = TopK(5)
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model(images)
        logits = match_size(logits.float(), targets)
        cm.update(targets, logits.argmax(1))
        if task == "classification":
            topk.update(targets, logits)
        if progress is not None:
            progress(images.shape[0], {})
    cm.reduce_from_all_processes()
    if task == "segmentation":
        return cm.segmentation_metrics(class_names)
    topk.reduce_from_all_processes()
    return {**cm.classification_metrics(class_names), "top5": topk.value()}
