"""slimcv: make PyTorch vision models small and fast by distillation, pruning and quantization."""
from __future__ import annotations

from typing import TYPE_CHECKING

from slimcv.errors import SlimcvError

__version__ = "0.1.0"
__all__ = ["SlimcvError", "train", "distill", "evaluate", "create_model", "list_models", "load_data", "__version__"]

if TYPE_CHECKING:
    from slimcv.data import load_data
    from slimcv.distill.distill import distill
    from slimcv.engine.evaluation import evaluate_model as evaluate
    from slimcv.engine.train import train
    from slimcv.models import create_model, list_models

_LAZY = {
    "train": ("slimcv.engine.train", "train"),
    "evaluate": ("slimcv.engine.evaluation", "evaluate_model"),
    "distill": ("slimcv.distill.distill", "distill"),
    "create_model": ("slimcv.models", "create_model"),
    "list_models": ("slimcv.models", "list_models"),
    "load_data": ("slimcv.data", "load_data"),
}


def __getattr__(name: str):
    # Lazy so `import slimcv` stays cheap and changes nothing global.
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'slimcv' has no attribute {name!r}")
