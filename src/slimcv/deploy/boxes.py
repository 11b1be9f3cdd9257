"""Detections from a detector's dense outputs, in numpy: score threshold, top-k per level, per-class NMS.

An exported detector returns one array (N, A, 4 + C) per batch: for every anchor or location its decoded box
(x1, y1, x2, y2 in the input's pixels) and C class scores. Selecting boxes happens here, beside the graph, so
it is the same in every runtime (NMS inside ONNX graphs breaks on images with zero or one detection).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


PREDICT_THRESHOLD = 0.3  # boxes a prediction reports by default (scoring mAP keeps the detector's own, lower one)


@dataclass(frozen=True)
class BoxSelection:
    """How boxes are picked from dense outputs; ``levels`` is the number of anchors per feature level."""

    levels: tuple[int, ...] = ()
    score_threshold: float = 0.05
    nms_iou: float = 0.6
    candidates: int = 1000  # top-scoring (anchor, class) pairs kept per level before NMS
    max_detections: int = 100
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        d["levels"] = list(self.levels)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BoxSelection:
        keys = ("score_threshold", "nms_iou", "candidates", "max_detections")
        return cls(levels=tuple(int(v) for v in d.get("levels", ())), **{k: d[k] for k in keys if k in d})

    def with_threshold(self, score_threshold: float | None) -> BoxSelection:
        if score_threshold is None:
            return self
        return BoxSelection(self.levels, float(score_threshold), self.nms_iou, self.candidates, self.max_detections)


@dataclass
class Detections:
    """One image's boxes (K, 4) XYXY in pixels, scores (K,) and 0-based class labels (K,), best first."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def scaled(self, sx: float, sy: float) -> Detections:
        return Detections(self.boxes * np.asarray([sx, sy, sx, sy], np.float32), self.scores, self.labels)

    def __len__(self) -> int:
        return len(self.scores)


def select(dense: np.ndarray, sel: BoxSelection) -> Detections:
    """One image's (A, 4 + C) dense output -> its detections (torchvision's FCOS/RetinaNet selection rule)."""
    dense = np.asarray(dense, np.float32)
    boxes, scores = dense[:, :4], dense[:, 4:]
    num_classes = scores.shape[1]
    levels = sel.levels or (len(dense),)
    if sum(levels) != len(dense):
        raise ValueError(f"dense output has {len(dense)} anchors but the levels add up to {sum(levels)}")
    picked_box, picked_score, picked_label = [], [], []
    start = 0
    for n in levels:
        flat = scores[start:start + n].reshape(-1)
        idx = np.flatnonzero(flat > sel.score_threshold)
        if len(idx) > sel.candidates:
            idx = idx[np.argsort(-flat[idx], kind="stable")[:sel.candidates]]
        picked_box.append(boxes[start + idx // num_classes])
        picked_score.append(flat[idx])
        picked_label.append(idx % num_classes)
        start += n
    b, s, lab = np.concatenate(picked_box), np.concatenate(picked_score), np.concatenate(picked_label)
    keep = batched_nms(b, s, lab, sel.nms_iou, limit=sel.max_detections)
    return Detections(b[keep].astype(np.float32), s[keep].astype(np.float32), lab[keep].astype(np.int64))


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float,
                limit: int | None = None) -> np.ndarray:
    """Indices kept by greedy NMS done per class, best score first (torchvision.ops.batched_nms's result, cut
    at ``limit``)."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    # boxes of different classes never overlap once each class is shifted to its own region (torchvision's trick)
    offset = labels.astype(np.float32)[:, None] * (float(boxes.max()) + 1.0)
    return nms(boxes + offset, scores, iou, limit)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, limit: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression; ties keep the lower index, as torchvision's does. Greedy keeps boxes best
    first, so stopping at ``limit`` kept boxes gives the first ``limit`` of the full result."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, i].astype(np.float64) for i in range(4))
    area = (x2 - x1) * (y2 - y1)
    keep = []
    while len(order) and (limit is None or len(keep) < limit):
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        overlap = inter / np.maximum(area[i] + area[rest] - inter, 1e-12)
        order = rest[overlap <= iou]
    return np.asarray(keep, np.int64)


def to_records(det: Detections, class_names: Sequence[str] | None) -> list[dict[str, Any]]:
    """Detections as JSON-ready dicts: label, name, score, box [x1, y1, x2, y2] in pixels."""
    names = list(class_names or [])
    return [{"label": int(lab), "name": names[lab] if lab < len(names) else str(int(lab)),
             "score": round(float(s), 5), "box": [round(float(v), 2) for v in b]}
            for b, s, lab in zip(det.boxes, det.scores, det.labels)]
