"""Detection in the shared engine: the training objective and the evaluation pass.

A detector takes and returns class ids from 1 (0 is background, torchvision's numbering); slimcv's data counts
classes from 0. The shift happens here, at the model's door, in both directions.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from slimcv.errors import SlimcvError


def model_targets(targets: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Data targets -> a detector's: labels from 1, crowd/difficult objects left out of training."""
    out = []
    for t in targets:
        keep = t["iscrowd"] == 0 if "iscrowd" in t else slice(None)
        out.append({"boxes": t["boxes"][keep].float(), "labels": t["labels"][keep].long() + 1})
    return out


class DetectionLoss(nn.Module):
    """The detector's own losses (torchvision contract: ``model(images, targets)`` -> dict), summed."""

    def forward(self, model: nn.Module, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]
                ) -> dict[str, torch.Tensor]:
        losses = model(list(images), model_targets(targets))
        if not isinstance(losses, dict) or not losses:
            raise SlimcvError(f"{type(model).__name__} returned {type(losses).__name__} in training, not a dict of "
                              "losses; a detector must follow torchvision's contract (model(images, targets) -> "
                              "dict of losses in train mode).")
        terms = {k: v.float() for k, v in losses.items()}
        return {"loss": sum(terms.values()), **terms}


def predictions(model: nn.Module, images: torch.Tensor, score_threshold: float | None = None
                ) -> list[dict[str, np.ndarray]]:
    """One ``{"boxes", "scores", "labels"}`` (labels from 0) per image, from a detector in eval mode, or from a
    network as deployed (dense (N, A, 4 + C) outputs, selected like the deployed predictor does)."""
    out = model(images)
    selection = getattr(model, "selection", None)
    if torch.is_tensor(out) and selection is not None:
        from slimcv.deploy.boxes import select

        sel = selection.with_threshold(score_threshold)
        dets = [select(d, sel) for d in out.detach().float().cpu().numpy()]
        return [{"boxes": d.boxes, "scores": d.scores, "labels": d.labels} for d in dets]
    if not isinstance(out, (list, tuple)) or (out and not isinstance(out[0], dict)):
        raise SlimcvError(f"{type(model).__name__} returned {type(out).__name__} in eval mode, not one dict of "
                          "boxes, scores and labels per image; a detector must follow torchvision's contract.")
    preds = []
    for d in out:
        labels = d["labels"].detach().cpu().numpy().astype(np.int64) - 1
        keep = labels >= 0  # a background label (an untrained detector can emit it) is no class
        preds.append({"boxes": d["boxes"].detach().float().cpu().numpy()[keep],
                      "scores": d["scores"].detach().float().cpu().numpy()[keep], "labels": labels[keep]})
    return preds


def evaluate_detection(model: nn.Module, loader, device: torch.device, *, num_classes: int, class_names=None,
                       amp: str = "none", progress=None, autocast=None) -> dict[str, Any]:
    """COCO mAP over ``loader``, reduced across processes."""
    from slimcv.engine.detection_metrics import DetectionMAP

    metric = DetectionMAP(num_classes, class_names)
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        with autocast(device, amp):
            preds = predictions(model, images)
        metric.update(preds, [{k: v for k, v in t.items() if k in ("boxes", "labels", "iscrowd")} for t in targets])
        if progress is not None:
            progress(images.shape[0], {})
    metric.reduce_from_all_processes()
    result = metric.compute()
    if not result.get("objects"):
        raise SlimcvError(f"The validation images ({result.get('images', 0)}) hold no objects to detect, so no "
                          "mAP can be measured; check the validation split's annotations (slimcv check-data).")
    return result
