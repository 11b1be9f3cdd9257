"""Deployment: ``slimcv.deploy.load(path)`` is a predictor over an ONNX file; the chooser picks by measurement.

Importing this package needs only numpy, Pillow and ONNX Runtime: the predictor runs without torch.
``predict_files`` writes predictions for folders of images; ``serve``/``create_app`` put a model behind HTTP
(the ``serve`` extra: FastAPI and uvicorn).
"""
from __future__ import annotations

from slimcv.deploy.predictor import Prediction, Predictor, load, read_sidecar
from slimcv.deploy.visual import colorize, default_palette, overlay

__all__ = ["load", "Predictor", "Prediction", "read_sidecar", "colorize", "overlay", "default_palette",
           "predict_files", "serve", "create_app", "ServeConfig", "choose_runtime", "Candidate", "Recommendation"]

_LAZY = {"choose_runtime": "chooser", "Candidate": "chooser", "Recommendation": "chooser",
         "predict_files": "batch", "serve": "server", "create_app": "server", "ServeConfig": "server"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"slimcv.deploy.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'slimcv.deploy' has no attribute {name!r}")
