"""Tiny exported models for the deployment tests: an ONNX file with its sidecar, and the validation images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from slimcv.data import load_data
from slimcv.export import export
from slimcv.models import create_model

SEG = {"spec": "synthetic-shapes", "options": {"size": 40, "length": 6}, "workers": 0}
CLS = {"spec": "synthetic-shapes:classification", "options": {"size": 32, "length": 6}, "workers": 0}


def exported(tmp: Path, data: dict, name: str, **export_options) -> tuple[Path, list[np.ndarray]]:
    """An exported model and its validation images as uint8 arrays."""
    bundle = load_data(data)
    torch.manual_seed(0)
    kwargs = {"base_width": 2, "depth": 3} if name == "unet" else {}
    net = create_model(name, bundle.num_classes, **kwargs).eval()
    with torch.no_grad():  # a trained-looking spread of classes, not one class everywhere
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(3)
    path = export(net, tmp / f"{name}.onnx", bundle, samples=2, **export_options).path
    raw = bundle.val.dataset if hasattr(bundle.val, "dataset") else bundle.val
    return path, [raw.load(i)[0].permute(1, 2, 0).numpy() for i in range(len(raw))]
