"""Unstructured magnitude pruning, made permanent: zeros in the weights, no masks or hooks left behind.

Dense runtimes (PyTorch, ONNX Runtime) do not run a sparse model faster: what sparsity buys is a smaller
compressed file, reported here as the zipped safetensors size."""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from slimcv.errors import SlimcvError
from slimcv.run_folder import MODEL_WEIGHTS


@dataclass
class SparsityReport:
    sparsity: float
    dense_bytes: int
    zipped_bytes: int


def prunable_weights(model: nn.Module, skip_output: int | None = None) -> list[tuple[nn.Module, str]]:
    """(module, 'weight') of every Conv/Linear, except layers emitting ``skip_output`` classes."""
    out = []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            n_out = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            if skip_output is None or n_out != skip_output:
                out.append((m, "weight"))
    return out


def prune_unstructured(model: nn.Module, amount: float, *, global_ranking: bool = True,
                       num_classes: int | None = None) -> SparsityReport:
    """Zero the ``amount`` smallest-magnitude weights (globally or per layer) and make it permanent."""
    if not 0 < amount < 1:
        raise SlimcvError(f"Sparsity {amount} must be between 0 and 1 (0.7 zeroes 70% of the weights).")
    params = prunable_weights(model, num_classes)
    if global_ranking:
        tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=amount)
    else:
        for module, name in params:
            tprune.l1_unstructured(module, name, amount=amount)
    for module, name in params:
        tprune.remove(module, name)  # folds the mask into the weight: no weight_orig, no hook
    return sparsity_report(model, num_classes)


def sparsity_report(model: nn.Module, num_classes: int | None = None) -> SparsityReport:
    weights = [getattr(m, n) for m, n in prunable_weights(model, num_classes)]
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    from safetensors.torch import save

    blob = save({k: v.contiguous() for k, v in model.state_dict().items()})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(MODEL_WEIGHTS, blob)
    return SparsityReport(zeros / max(total, 1), len(blob), len(buf.getvalue()))


@torch.no_grad()
def has_pruning_leftovers(model: nn.Module) -> bool:
    return any(n.endswith(("_orig", "_mask")) for n, _ in model.named_parameters()) or any(
        n.endswith("_mask") for n, _ in model.named_buffers())
