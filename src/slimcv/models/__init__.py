"""Model registry: ``create_model(name, num_classes)`` for torchvision, slimcv, CIFAR, timm and smp models."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from slimcv.errors import SlimcvError
from slimcv.models import cifar_resnet as _cifar_resnet  # noqa: F401  (registration order: own, CIFAR, torchvision)
from slimcv.models import detection as _detection  # noqa: F401
from slimcv.models import mobile as _mobile  # noqa: F401
from slimcv.models import tv as _tv  # noqa: F401
from slimcv.models import unet as _unet  # noqa: F401
from slimcv.models._registry import MODELS
from slimcv.models.external import build_external, external_task
from slimcv.models.factory import build_factory, is_factory
from slimcv.models.weights import load_weights, read_state_dict, save_weights

__all__ = ["create_model", "list_models", "model_task", "load_weights", "read_state_dict", "save_weights", "MODELS"]
EXTERNAL_PREFIXES = ("timm:", "smp:")


def list_models(task: str | None = None) -> list[str]:
    """Registered model names, optionally only those of one task."""
    return [n for n in MODELS.names() if task is None or MODELS.meta(n)["task"] == task]


def check_model_name(name: str) -> None:
    """Raise a SlimcvError with close matches when ``name`` is not a model slimcv can build."""
    if not name.startswith(EXTERNAL_PREFIXES) and not is_factory(name):
        MODELS.get(name)


def model_task(name: str) -> str | None:
    """'classification' or 'segmentation' for a model name (None for a factory: known once built)."""
    if name.startswith(EXTERNAL_PREFIXES):
        return external_task(name)
    if is_factory(name):
        return None  # known once built
    return MODELS.meta(name)["task"]


def create_model(name: str, num_classes: int, weights: str | Path | None = None, *,
                 from_file: str | Path | None = None, **kwargs: Any) -> nn.Module:
    """Build a model by registered name or ``package.module:factory``; ``weights`` is a local safetensors or
    state_dict file (never a download); ``from_file`` is the file that named it, when a file did."""
    if name.startswith(EXTERNAL_PREFIXES):
        model = build_external(name, num_classes, **kwargs)
    elif is_factory(name):
        model = build_factory(name, num_classes, from_file=from_file, **kwargs)
    else:
        builder = MODELS.get(name)
        try:
            model = builder(num_classes=num_classes, **kwargs)
        except TypeError as e:
            raise SlimcvError(f"Bad options for model {name!r}: {e}.") from e
    if weights is not None:
        load_weights(model, weights)
    # how to rebuild it: stages given this object later can save it as a reloadable folder
    object.__setattr__(model, "_slimcv_spec", {"name": name, "num_classes": num_classes, "kwargs": dict(kwargs)})
    return model
