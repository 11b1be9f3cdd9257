"""Agreement of an exported ONNX model with its PyTorch original, measured in ONNX Runtime on real samples."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from slimcv.errors import SlimcvError


@dataclass(frozen=True)
class Agreement:
    """How closely ONNX Runtime reproduces PyTorch: worst logit gap and share of equal argmax decisions."""

    max_abs_diff: float
    max_abs_logit: float
    argmax_agreement: float
    samples: int
    shapes: tuple[tuple[int, ...], ...]
    source: str

    def passed(self, atol: float, rtol: float, min_agreement: float) -> bool:
        return self.max_abs_diff <= atol + rtol * self.max_abs_logit and self.argmax_agreement >= min_agreement

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.inference_mode()
def compare(model: nn.Module, session: Any, batches: Iterable[torch.Tensor], source: str = "real") -> Agreement:
    """Run every batch through ``model`` (eval) and the ORT ``session``; collect the worst differences."""
    model.eval()
    name = session.get_inputs()[0].name
    worst, scale, agree, total, n, shapes = 0.0, 0.0, 0, 0, 0, []
    for x in batches:
        ref = model(x).float().cpu().numpy()
        try:
            out = session.run(None, {name: np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)})[0]
        except Exception as e:  # onnxruntime raises its own exception types
            raise SlimcvError(f"ONNX Runtime failed on an input of shape {tuple(x.shape)} ({str(e).splitlines()[0]}); "
                              "export with a fixed size (--static) or a newer opset.") from e
        if out.shape != ref.shape:
            raise SlimcvError(f"ONNX output shape {out.shape} differs from PyTorch {ref.shape} on input "
                              f"{tuple(x.shape)}: the export baked in the trace size; export with --static.")
        worst = max(worst, float(np.abs(out - ref).max()))
        scale = max(scale, float(np.abs(ref).max()))
        if hasattr(model, "selection"):  # a detector: the boxes it keeps must be the same
            a, t = same_detections(ref, out, model.selection)
        else:
            a, t = int((out.argmax(1) == ref.argmax(1)).sum()), ref.argmax(1).size
        agree, total = agree + a, total + t
        n += x.shape[0]
        shapes.append(tuple(x.shape))
    if n == 0:
        raise SlimcvError("No samples to compare ONNX Runtime with PyTorch on; give a dataset with validation images.")
    return Agreement(worst, scale, agree / total, n, tuple(shapes), source)


def same_detections(ref: np.ndarray, out: np.ndarray, selection: Any, tol: float = 0.5,
                    edge: float = 1e-3) -> tuple[int, int]:
    """(matching, total) detections of two batches of dense outputs: same class, each box side within ``tol``
    pixels; an image without detections in both counts as one match. Boxes scoring within ``edge`` of where the
    selection cuts (its threshold, or the lowest score kept under the detection cap) are left out: a 1e-6
    difference may keep one there and drop the other, in any two runtimes."""
    from slimcv.deploy.boxes import Detections, select

    agree = total = 0
    for r, o in zip(ref, out):
        a, b = select(r, selection), select(o, selection)
        cut = selection.score_threshold
        if len(a) >= selection.max_detections or len(b) >= selection.max_detections:
            cut = max(cut, min(a.scores.min(initial=1.0), b.scores.min(initial=1.0)))
        a, b = (Detections(d.boxes[d.scores > cut + edge], d.scores[d.scores > cut + edge],
                           d.labels[d.scores > cut + edge]) for d in (a, b))
        if len(a) == 0 and len(b) == 0:
            agree, total = agree + 1, total + 1
            continue
        used = np.zeros(len(b), bool)
        for box, label in zip(a.boxes, a.labels):
            hit = np.flatnonzero(~used & (b.labels == label) & (np.abs(b.boxes - box).max(1) <= tol))
            if len(hit):
                used[hit[0]] = True
                agree += 1
        total += max(len(a), len(b))
    return agree, total
