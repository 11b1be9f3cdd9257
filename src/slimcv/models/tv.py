"""torchvision classification and segmentation models, built without any download."""
from __future__ import annotations

import torch
import torchvision
from torch import nn

from slimcv.models._registry import MODELS

CLASSIFICATION = ("resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
                  "efficientnet_b0", "shufflenet_v2_x1_0", "regnet_x_400mf")
SEGMENTATION = ("deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50", "deeplabv3_resnet101",
                "lraspp_mobilenet_v3_large", "fcn_resnet50")


class SegmentationLogits(nn.Module):
    """Wraps a torchvision segmentation model so it returns the plain ``out`` logits (N, C, H, W)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _register_classification(name: str) -> None:
    def build(num_classes: int = 1000, **kwargs) -> nn.Module:
        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes, **kwargs)

    build.__doc__ = f"torchvision {name} (random init; load weights from a local file)."
    MODELS.register(name, task="classification", family="torchvision")(build)


def _register_segmentation(name: str) -> None:
    def build(num_classes: int = 21, **kwargs) -> nn.Module:
        kwargs.setdefault("aux_loss", None if name.startswith("lraspp") else False)
        if kwargs["aux_loss"] is None:
            kwargs.pop("aux_loss")
        fn = getattr(torchvision.models.segmentation, name)
        return SegmentationLogits(fn(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs))

    build.__doc__ = f"torchvision {name}, returning logits (random init; load weights from a local file)."
    MODELS.register(name, task="segmentation", family="torchvision")(build)


for _n in CLASSIFICATION:
    _register_classification(_n)
for _n in SEGMENTATION:
    _register_segmentation(_n)
