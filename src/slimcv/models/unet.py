"""slimcv's U-Net: base width and depth configurable; the mission's teacher (wide) and a natural student (narrow)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slimcv.models._registry import MODELS


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Ronneberger et al. 2015 with BatchNorm; any input size (padded to a multiple of 2**depth)."""

    def __init__(self, num_classes: int, base_width: int = 32, depth: int = 4, in_channels: int = 3) -> None:
        super().__init__()
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.encoders = nn.ModuleList([_block(in_channels, widths[0])])
        self.encoders.extend(_block(widths[i], widths[i + 1]) for i in range(depth))
        self.ups = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth)))
        self.decoders = nn.ModuleList(_block(widths[i] * 2, widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = 2**self.depth
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        skips = []
        for i, enc in enumerate(self.encoders):
            x = enc(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.ups, self.decoders):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        out = self.head(x)
        return out[..., :h, :w] if (ph or pw) else out


@MODELS.register("unet", task="segmentation", family="unet")
def unet(num_classes: int, base_width: int = 32, depth: int = 4, in_channels: int = 3) -> UNet:
    """U-Net, default base width 32 and depth 4 (7.8 M params): the teacher."""
    return UNet(num_classes, base_width, depth, in_channels)


@MODELS.register("unet_small", task="segmentation", family="unet")
def unet_small(num_classes: int, base_width: int = 8, depth: int = 4, in_channels: int = 3) -> UNet:
    """U-Net with base width 8 (16x fewer MACs than ``unet``): a natural student."""
    return UNet(num_classes, base_width, depth, in_channels)
