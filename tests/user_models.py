"""A user's own modules, not in slimcv's registry, importable by path (as a user's package would be)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset


def _cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class UserSegNet(nn.Module):
    """A residual add and a U-Net style skip concatenation: both couple channels across layers."""

    def __init__(self, num_classes: int = 3, width: int = 8) -> None:
        super().__init__()
        self.stem = _cbr(3, width)
        self.block = nn.Sequential(_cbr(width, width), _cbr(width, width))
        self.down = _cbr(width, 2 * width, stride=2)
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.head = nn.Conv2d(2 * width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        r = s + self.block(s)
        u = self.up(self.down(r))
        return self.head(torch.cat([u, r], dim=1))


class ChannelCountInForward(nn.Module):
    """Hard-codes its channel count in forward: Torch-Pruning cannot see it, pruning must name the layer."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        return self.b(y.view(y.shape[0], 16, *y.shape[2:]))


class Blobs(Dataset):
    """Float images in [0, 1] with one bright square; the mask marks it (class 1), its border (class 2)."""

    def __init__(self, n: int = 24, size: int = 32, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for _ in range(n):
            img = torch.rand(3, size, size, generator=g) * 0.3
            mask = torch.zeros(size, size, dtype=torch.long)
            y, x = (int(v) for v in torch.randint(2, size - 14, (2,), generator=g))
            img[:, y:y + 12, x:x + 12] += 0.6
            mask[y:y + 12, x:x + 12] = 2
            mask[y + 2:y + 10, x + 2:x + 10] = 1
            self.items.append((img.clamp(0, 1), mask))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


class UsesSvd(nn.Module):
    """An operator the ONNX exporter has no translation for."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y + torch.linalg.svd(y.flatten(2))[0].sum()
