"""COCO-style detection metrics (mAP, AR, per-class AP, PR curves) computed with pycocotools, reduced across processes.

Targets may flag objects with "iscrowd": COCO crowd regions, and VOC "difficult" objects, which are treated the same
way. Such objects are kept out of the metric: they are not counted as objects to find, and a detection on one is
neither a true nor a false positive. As in COCO, the overlap with a crowd box is intersection / detection area and
any number of detections may land on it.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from slimcv.errors import SlimcvError


class DetectionMAP:
    """Accumulates per-image predictions and targets; compute() runs the COCO bbox evaluation over all of them."""

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None) -> None:
        if class_names is not None and len(class_names) != num_classes:
            raise SlimcvError(f"Give {num_classes} class names, one per class; got {len(class_names)}.")
        self.num_classes = num_classes
        self.class_names = [str(n) for n in (class_names or range(num_classes))]
        self.preds: list[dict[str, np.ndarray]] = []
        self.targets: list[dict[str, np.ndarray]] = []

    def update(self, preds: list[dict], targets: list[dict]) -> None:
        """Add one batch: a preds dict (boxes XYXY pixels, scores, labels) and a targets dict per image."""
        if len(preds) != len(targets):
            raise SlimcvError(f"Give one prediction per target image; got {len(preds)} predictions "
                              f"for {len(targets)} targets.")
        for p, t in zip(preds, targets):
            boxes, labels = _boxes(p, "prediction"), _labels(p, "prediction", self.num_classes)
            scores = _array(_get(p, "scores", "prediction"), np.float64).reshape(-1)
            if not len(boxes) == len(labels) == len(scores):
                raise SlimcvError(f"A prediction has {len(boxes)} boxes, {len(scores)} scores and {len(labels)} "
                                  "labels; give one score and one label per box.")
            self.preds.append({"boxes": boxes, "scores": scores, "labels": labels})
            gt_boxes, gt_labels = _boxes(t, "target"), _labels(t, "target", self.num_classes)
            crowd = t.get("iscrowd")
            crowd = np.zeros(len(gt_boxes), bool) if crowd is None else _array(crowd, bool).reshape(-1)
            if not len(gt_boxes) == len(gt_labels) == len(crowd):
                raise SlimcvError(f"A target has {len(gt_boxes)} boxes, {len(gt_labels)} labels and {len(crowd)} "
                                  "iscrowd flags; give one label (and flag) per box.")
            self.targets.append({"boxes": gt_boxes, "labels": gt_labels, "iscrowd": crowd})

    def reduce_from_all_processes(self) -> None:
        """Gather every rank's images (rank 0's first) so each rank evaluates the whole set; no-op without DDP."""
        if dist.is_available() and dist.is_initialized():
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (self.preds, self.targets))
            self.preds = [p for preds, _ in gathered for p in preds]
            self.targets = [t for _, targets in gathered for t in targets]

    def compute(self) -> dict:
        """COCO bbox metrics in percent; classes without (non-crowd) ground truth are None and left out of means."""
        try:
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        except ImportError as e:
            raise SlimcvError("Detection metrics need pycocotools; install it with `pip install pycocotools`.") from e
        images = [{"id": i + 1} for i in range(len(self.targets))]
        categories = [{"id": k + 1, "name": n} for k, n in enumerate(self.class_names)]
        gt_anns, dt_anns = [], []
        for i, (p, t) in enumerate(zip(self.preds, self.targets)):
            for box, label, crowd in zip(_xywh(t["boxes"]), t["labels"], t["iscrowd"]):
                # ids start at 1: COCOeval stores the matched gt id and reads 0 as "unmatched"
                gt_anns.append({"id": len(gt_anns) + 1, "image_id": i + 1, "category_id": int(label) + 1,
                                "bbox": box, "area": box[2] * box[3], "iscrowd": int(crowd)})
            for box, score, label in zip(_xywh(p["boxes"]), p["scores"], p["labels"]):
                dt_anns.append({"image_id": i + 1, "category_id": int(label) + 1, "bbox": box, "score": float(score)})
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and the summary table
            gt = COCO()
            gt.dataset = {"images": images, "categories": categories, "annotations": gt_anns}
            gt.createIndex()
            if dt_anns:
                dt = gt.loadRes(dt_anns)
            else:  # loadRes reads anns[0]; an empty result set is built by hand and scores 0 wherever there is gt
                dt = COCO()
                dt.dataset = {"images": list(images), "categories": categories, "annotations": []}
                dt.createIndex()
            ev = COCOeval(gt, dt, "bbox")
            ev.params.catIds = [c["id"] for c in categories]
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        s = ev.stats
        prec = ev.eval["precision"][:, :, :, 0, -1]  # (IoU thresholds, recall points, classes) at area all, 100 dets
        recall = [round(float(r), 4) for r in ev.params.recThrs]
        curves = {n: _curve(recall, prec[0, :, k]) for k, n in enumerate(self.class_names)}
        return {
            "map": _stat(s[0]), "map50": _stat(s[1]), "map75": _stat(s[2]),
            "map_small": _stat(s[3]), "map_medium": _stat(s[4]), "map_large": _stat(s[5]),
            "mar100": _stat(s[8]),
            "per_class_ap": {n: _ap(prec[:, :, k]) for k, n in enumerate(self.class_names)},
            "per_class_ap50": {n: _ap(prec[0, :, k]) for k, n in enumerate(self.class_names)},
            "pr_curve": curves,
            "images": len(self.targets),
            "objects": int(sum((~t["iscrowd"]).sum() for t in self.targets)),
        }


def detection_map(preds: list[dict], targets: list[dict], num_classes: int,
                  class_names: Sequence[str] | None = None) -> dict:
    """COCO bbox metrics of one list of per-image predictions against their targets (see DetectionMAP)."""
    m = DetectionMAP(num_classes, class_names)
    m.update(preds, targets)
    return m.compute()


def _get(d: dict, key: str, what: str) -> Any:
    if key not in d:
        raise SlimcvError(f"A {what} dict lacks {key!r}; give {what}s as dicts with 'boxes', 'labels'"
                          f"{', scores' if what == 'prediction' else ''}.")
    return d[key]


def _array(x: Any, dtype: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _boxes(d: dict, what: str) -> np.ndarray:
    b = _array(_get(d, "boxes", what), np.float64)
    if b.size == 0:
        return b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise SlimcvError(f"A {what}'s boxes have shape {tuple(b.shape)}; give a (N, 4) array of x1, y1, x2, y2.")
    return b


def _labels(d: dict, what: str, num_classes: int) -> np.ndarray:
    lab = _array(_get(d, "labels", what), np.float64).reshape(-1)
    if len(lab) and (np.any(lab != np.round(lab)) or lab.min() < 0 or lab.max() >= num_classes):
        raise SlimcvError(f"A {what} has labels {sorted(set(lab.tolist()))}; give 0-based class indices "
                          f"below num_classes={num_classes}.")
    return lab.astype(np.int64)


def _xywh(b: np.ndarray) -> list[list[float]]:
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1).tolist()


def _stat(v: float) -> float | None:
    """A COCOeval summary number in percent; its -1 (nothing to measure) becomes None."""
    return None if v < 0 else float(v) * 100


def _ap(p: np.ndarray) -> float | None:
    """Mean of the defined precision entries in percent, as torchmetrics does per class; None when none are."""
    v = p[p > -1]
    return round(float(v.mean()) * 100, 4) if v.size else None


def _curve(recall: list[float], p: np.ndarray) -> dict | None:
    if not (p > -1).any():
        return None
    return {"recall": recall, "precision": [round(float(v), 4) if v > -1 else None for v in p]}
