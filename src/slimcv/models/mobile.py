"""CPU-efficient segmentation students: LR-ASPP on a MobileNetV3 of any width, at any input resolution.

``input_scale`` runs the network on a smaller copy of the image and upsamples its logits back, so the
resolution is a property of the model: it trains, exports and deploys that way (the ONNX file holds the resize).
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import mobilenet_v3_large, mobilenet_v3_small
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.lraspp import LRASPP

from slimcv.errors import SlimcvError
from slimcv.models._registry import MODELS

# torchvision's MobileNetV3 keeps BatchNorm statistics with momentum 0.01 (its 600-epoch ImageNet recipe); over a
# few epochs from scratch they lag the weights so far that evaluation predicted one class everywhere (21 mIoU,
# 65 with batch statistics, after 6 epochs on synthetic shapes; slimdet_s reached 13.5 mAP after 10 epochs on
# synthetic detection instead of 41.7). PyTorch's default momentum keeps up.
NORM = partial(nn.BatchNorm2d, eps=0.001, momentum=0.1)


class LRASPPNet(nn.Module):
    """LR-ASPP (Howard et al. 2019) on a MobileNetV3 encoder; returns logits at the input's size."""

    def __init__(self, num_classes: int, width_mult: float = 1.0, small: bool = False, dilated: bool = True,
                 inter_channels: int = 128, input_scale: float = 1.0) -> None:
        super().__init__()
        if not 0 < input_scale <= 1:
            raise SlimcvError(f"input_scale must be in (0, 1], got {input_scale}.")
        if width_mult <= 0:
            raise SlimcvError(f"width_mult must be positive, got {width_mult}.")
        encoder = (mobilenet_v3_small if small else mobilenet_v3_large)(width_mult=width_mult, dilated=dilated,
                                                                        norm_layer=NORM)
        features = encoder.features
        stages = [0] + [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)] + [len(features) - 1]
        low, high = stages[-4], stages[-1]  # output stride 8 and 16 (32 without dilation)
        backbone = IntermediateLayerGetter(features, return_layers={str(low): "low", str(high): "high"})
        self.lraspp = LRASPP(backbone, features[low].out_channels, features[high].out_channels, num_classes,
                             inter_channels)
        self.input_scale = input_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        if self.input_scale != 1.0:
            x = F.interpolate(x, scale_factor=self.input_scale, mode="bilinear", align_corners=False,
                              recompute_scale_factor=False)
        out = self.lraspp(x)["out"]
        if out.shape[-2:] != size:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out


@MODELS.register("lraspp_mobilenet", task="segmentation", family="mobile")
def lraspp_mobilenet(num_classes: int, width_mult: float = 1.0, small: bool = False, dilated: bool = True,
                     inter_channels: int = 128, input_scale: float = 1.0) -> LRASPPNet:
    """LR-ASPP MobileNetV3 (large, or ``small``) at ``width_mult`` and ``input_scale``: a CPU-efficient student."""
    return LRASPPNet(num_classes, width_mult, small, dilated, inter_channels, input_scale)
