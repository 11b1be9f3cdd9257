"""Feature distillation (FitNets-style hints) between named layers, captured with forward hooks."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from slimcv.errors import SlimcvError, close_matches


def find_module(model: nn.Module, name: str, role: str) -> nn.Module:
    """The sub-module called ``name`` (as in ``model.named_modules()``), or a SlimcvError with close names."""
    modules = dict(model.named_modules())
    if name not in modules:
        raise SlimcvError(f"The {role} has no layer {name!r}.{close_matches(name, modules)} "
                          f"List its layers with [n for n, _ in model.named_modules()].")
    return modules[name]


class FeatureDistiller(nn.Module):
    """Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015): MSE between a student layer, mapped by
    a learnable 1x1 conv adapter when channel counts differ, and the paired teacher layer (student features
    resized to the teacher's spatial size). Works for any nn.Module: torchvision, timm or slimcv."""

    def __init__(self, student: nn.Module, teacher: nn.Module, pairs: Sequence[tuple[str, str]],
                 sample: torch.Tensor) -> None:
        super().__init__()
        if not pairs:
            raise SlimcvError("Feature distillation needs layer pairs, e.g. layers: [[student.layer, teacher.layer]].")
        self.pairs = [tuple(p) for p in pairs]
        self._feats: dict[str, torch.Tensor] = {}
        self._hooks = []
        for i, (s_name, t_name) in enumerate(self.pairs):
            self._hook(find_module(student, s_name, "student"), f"s{i}")
            self._hook(find_module(teacher, t_name, "teacher"), f"t{i}")
        was_training = student.training
        student.eval()
        with torch.no_grad():
            student(sample)
            teacher(sample)
        student.train(was_training)
        adapters = []
        for i in range(len(self.pairs)):
            cs, ct = self._feats[f"s{i}"].shape[1], self._feats[f"t{i}"].shape[1]
            adapters.append(nn.Identity() if cs == ct else nn.Conv2d(cs, ct, 1, bias=False))
        self.adapters = nn.ModuleList(adapters)
        self._feats.clear()

    def _hook(self, module: nn.Module, key: str) -> None:
        def save(_m, _inp, out):
            self._feats[key] = out if torch.is_tensor(out) else out[0]

        self._hooks.append(module.register_forward_hook(save))

    def forward(self) -> torch.Tensor:
        """The hint loss of the last student and teacher forward passes."""
        total = 0.0
        for i, adapter in enumerate(self.adapters):
            fs, ft = adapter(self._feats[f"s{i}"].float()), self._feats[f"t{i}"].float().detach()
            if fs.shape[-2:] != ft.shape[-2:]:
                fs = F.interpolate(fs, size=ft.shape[-2:], mode="bilinear", align_corners=False)
            total = total + F.mse_loss(fs, ft)
        self._feats.clear()
        return total / len(self.adapters)

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
