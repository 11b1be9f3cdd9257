"""CIFAR ResNets (He et al. 2016, section 4.2): 3 stages of 16/32/64 channels, option-B (1x1 conv) shortcuts."""
from __future__ import annotations

import torch
from torch import nn

from slimcv.models._registry import MODELS


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError("CIFAR ResNet depth must be 6n+2")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        layers, cin = [], width
        for i, cout in enumerate((width, width * 2, width * 4)):
            blocks = [BasicBlock(cin if j == 0 else cout, cout, 2 if (i > 0 and j == 0) else 1) for j in range(n)]
            layers.append(nn.Sequential(*blocks))
            cin = cout
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _register(depth: int) -> None:
    def build(num_classes: int = 10, width: int = 16) -> CifarResNet:
        return CifarResNet(depth, num_classes, width)

    build.__doc__ = f"CIFAR ResNet-{depth} (He et al. 2016), for 32x32 inputs."
    MODELS.register(f"resnet{depth}", task="classification", family="cifar_resnet")(build)


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _register(_depth)
