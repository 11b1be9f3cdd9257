"""Confusion-matrix metrics for segmentation and classification, reduced across processes."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist


class ConfusionMatrix:
    """Accumulates a (C, C) matrix: rows are the true class, columns the prediction; ignore pixels skipped."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, target: torch.Tensor, pred: torch.Tensor) -> None:
        target, pred = target.flatten().cpu(), pred.flatten().cpu()
        keep = (target >= 0) & (target < self.num_classes)
        if self.ignore_index is not None:
            keep &= target != self.ignore_index
        idx = target[keep] * self.num_classes + pred[keep]
        self.mat += torch.bincount(idx, minlength=self.num_classes**2).reshape(self.num_classes, self.num_classes)

    def reduce_from_all_processes(self) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.mat)

    def segmentation_metrics(self, class_names: Sequence[str] | None = None) -> dict:
        """mIoU, per-class IoU, pixel accuracy, mean class accuracy and the pixel confusion matrix (rows: truth);
        classes absent from truth and prediction are left out of the means (NaN per class)."""
        h = self.mat.double()
        tp = h.diag()
        gt, pr = h.sum(1), h.sum(0)
        union = gt + pr - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
        acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, float("nan")))
        names = list(class_names or range(self.num_classes))
        return {
            "miou": _nanmean(iou) * 100,
            "pixel_acc": (tp.sum() / h.sum().clamp(min=1)).item() * 100,
            "mean_acc": _nanmean(acc) * 100,
            "per_class_iou": {str(n): _pct(v) for n, v in zip(names, iou)},
            "per_class_acc": {str(n): _pct(v) for n, v in zip(names, acc)},
            "confusion_matrix": self.mat.tolist(),
        }

    def classification_metrics(self, class_names: Sequence[str] | None = None) -> dict:
        h = self.mat.double()
        gt = h.sum(1)
        acc = torch.where(gt > 0, h.diag() / gt.clamp(min=1), torch.full_like(gt, float("nan")))
        names = list(class_names or range(self.num_classes))
        return {
            "top1": (h.diag().sum() / h.sum().clamp(min=1)).item() * 100,
            "per_class_acc": {str(n): _pct(v) for n, v in zip(names, acc)},
            "confusion_matrix": self.mat.tolist(),
        }


class TopK:
    """Counts top-k hits (top-5 by default) alongside the confusion matrix."""

    def __init__(self, k: int = 5) -> None:
        self.k, self.hits, self.total = k, torch.zeros((), dtype=torch.int64), torch.zeros((), dtype=torch.int64)

    def update(self, target: torch.Tensor, logits: torch.Tensor) -> None:
        k = min(self.k, logits.shape[1])
        top = logits.topk(k, dim=1).indices.cpu()
        self.hits += (top == target.cpu()[:, None]).any(1).sum()
        self.total += target.numel()

    def reduce_from_all_processes(self) -> None:
        if dist.is_available() and dist.is_initialized():
            t = torch.stack([self.hits, self.total])
            dist.all_reduce(t)
            self.hits, self.total = t[0], t[1]

    def value(self) -> float:
        return (self.hits.double() / self.total.clamp(min=1)).item() * 100


def _nanmean(t: torch.Tensor) -> float:
    v = t[~t.isnan()]
    return v.mean().item() if v.numel() else float("nan")


def _pct(v: torch.Tensor) -> float | None:
    return None if v.isnan() else round(v.item() * 100, 4)
