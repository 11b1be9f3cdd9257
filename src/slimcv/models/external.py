"""Models from optional libraries: ``timm:NAME`` and ``smp:ARCH:ENCODER``."""
from __future__ import annotations

import importlib

from torch import nn

from slimcv.errors import SlimcvError


def _import(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise SlimcvError(f"Model prefix needs the '{module}' package: pip install 'slimcv[{extra}]'.") from e


def build_external(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build ``timm:NAME`` or ``smp:ARCH:ENCODER`` with random weights (no hub download)."""
    prefix, _, rest = name.partition(":")
    if prefix == "timm":
        timm = _import("timm", "timm")
        if rest not in timm.list_models():
            raise SlimcvError(f"timm has no model {rest!r}; see timm.list_models() for names.")
        return timm.create_model(rest, pretrained=False, num_classes=num_classes, **kwargs)
    if prefix == "smp":
        smp = _import("segmentation_models_pytorch", "smp")
        arch, _, encoder = rest.partition(":")
        if not arch or not encoder:
            raise SlimcvError(f"Write smp models as smp:ARCH:ENCODER, e.g. smp:Unet:resnet18 (got {name!r}).")
        try:
            return smp.create_model(arch, encoder_name=encoder, encoder_weights=None, classes=num_classes, **kwargs)
        except (KeyError, ValueError) as e:
            raise SlimcvError(f"segmentation-models-pytorch cannot build {arch!r} with encoder {encoder!r}: {e}.") from e
    raise SlimcvError(f"Unknown model prefix {prefix!r}; use timm:NAME or smp:ARCH:ENCODER.")


def external_task(name: str) -> str:
    return "segmentation" if name.startswith("smp:") else "classification"
