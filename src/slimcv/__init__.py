"""slimcv: make PyTorch vision models small and fast by distillation, pruning and quantization."""
from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

from slimcv.errors import SlimcvError

__version__ = "0.1.0"
__all__ = ["SlimcvError", "train", "distill", "prune", "run", "compress", "demo", "export", "quantize", "bench",
           "report", "evaluate", "create_model", "list_models", "load_data", "load", "trust_remote_code",
           "__version__"]

if TYPE_CHECKING:
    from slimcv.artifact import load
    from slimcv.trust import trust_remote_code
    from slimcv.bench.bench import bench
    from slimcv.data import load_data
    from slimcv.distill.distill import distill
    from slimcv.engine.evaluation import evaluate_model as evaluate
    from slimcv.engine.train import train
    from slimcv.export.onnx import export
    from slimcv.models import create_model, list_models
    from slimcv.pipeline.compress import compress
    from slimcv.pipeline.demo import demo
    from slimcv.pipeline.runner import run
    from slimcv.prune.prune import prune
    from slimcv.quantize.quantize import quantize
    from slimcv.report.report import report

_LAZY = {
    "train": ("slimcv.engine.train", "train"),
    "evaluate": ("slimcv.engine.evaluation", "evaluate_model"),
    "distill": ("slimcv.distill.distill", "distill"),
    "create_model": ("slimcv.models", "create_model"),
    "list_models": ("slimcv.models", "list_models"),
    "load": ("slimcv.artifact", "load"),
    "trust_remote_code": ("slimcv.trust", "trust_remote_code"),
    "load_data": ("slimcv.data", "load_data"),
    "prune": ("slimcv.prune.prune", "prune"),
    "run": ("slimcv.pipeline.runner", "run"),
    "compress": ("slimcv.pipeline.compress", "compress"),
    "demo": ("slimcv.pipeline.demo", "demo"),
    "export": ("slimcv.export.onnx", "export"),
    "quantize": ("slimcv.quantize.quantize", "quantize"),
    "bench": ("slimcv.bench.bench", "bench"),
    "report": ("slimcv.report.report", "report"),
}


class _StagePackage(types.ModuleType):
    """A stage subpackage (``slimcv.prune``, ``slimcv.distill`` ...) that is also its stage function, so
    ``slimcv.prune(cfg)`` works even after ``import slimcv.prune.structured`` has bound the subpackage here."""

    def __call__(self, *args, **kwargs):
        module, attr = _LAZY[self.__name__.rpartition(".")[2]]
        import importlib

        return getattr(importlib.import_module(module), attr)(*args, **kwargs)


class _Slimcv(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        # The import system binds each imported subpackage here; a plain one named like a stage becomes callable.
        if name in _LAZY and type(value) is types.ModuleType and value.__name__ == f"{__name__}.{name}":
            value.__class__ = _StagePackage
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Slimcv


def __getattr__(name: str):
    # Lazy so `import slimcv` stays cheap and changes nothing global.
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        # a stage subpackage bound by that import (slimcv.prune) wins, so every access gives the same object
        return globals().get(name, value)
    raise AttributeError(f"module 'slimcv' has no attribute {name!r}")
