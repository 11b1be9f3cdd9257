"""Deployment: ``slimcv.deploy.load(path)`` is a predictor over an ONNX file; the chooser picks by measurement.

Importing this package needs only numpy, Pillow and ONNX Runtime: the predictor runs without torch.
"""
from __future__ import annotations

from slimcv.deploy.predictor import Prediction, Predictor, load, read_sidecar

__all__ = ["load", "Predictor", "Prediction", "read_sidecar", "choose_runtime", "Candidate", "Recommendation"]


def __getattr__(name: str):
    if name in ("choose_runtime", "Candidate", "Recommendation"):
        from slimcv.deploy import chooser

        return getattr(chooser, name)
    raise AttributeError(f"module 'slimcv.deploy' has no attribute {name!r}")
