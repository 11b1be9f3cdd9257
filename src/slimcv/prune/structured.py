"""Structured (channel) pruning: whole filters removed so the network is physically smaller.

Coupled layers (residual adds, U-Net skip concatenations, depthwise convs, BatchNorm, ASPP/LRASPP heads)
are kept consistent by Torch-Pruning's dependency graph (DepGraph, Fang et al., CVPR 2023). The layers
that produce the class outputs are never pruned. A pruned model is saved as its architecture spec plus
the pruning history (layer names and removed channel indices, plain JSON) beside safetensors weights, and
rebuilt by replaying that history on a freshly built model: no pickled modules.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slimcv.bench.macs import count_macs, count_params
from slimcv.errors import SlimcvError
from slimcv.registry import Registry

IMPORTANCES: Registry = Registry("importance")


def _tp():
    try:
        import torch_pruning
    except ImportError as e:  # a declared dependency; this only guards broken installs
        raise SlimcvError("Structured pruning needs torch-pruning: pip install torch-pruning.") from e
    return torch_pruning


@IMPORTANCES.register("l1")
def l1():
    """Filter L1 norm (Li et al., ICLR 2017), summed over the coupled layers of a group."""
    return _tp().importance.MagnitudeImportance(p=1)


@IMPORTANCES.register("l2")
def l2():
    """Filter L2 norm, summed over the coupled layers of a group."""
    return _tp().importance.MagnitudeImportance(p=2)


@IMPORTANCES.register("bn_scale")
def bn_scale():
    """|gamma| of the BatchNorm after each channel (Liu et al., "Network Slimming", ICCV 2017)."""
    return _tp().importance.BNScaleImportance()


@IMPORTANCES.register("taylor")
def taylor():
    """First-order Taylor |w * dL/dw| (Molchanov et al., CVPR 2019); needs gradients from a few batches."""
    return _tp().importance.TaylorImportance()


@dataclass
class PruneResult:
    """Sizes before and after, and the history that rebuilds the pruned architecture."""

    history: list
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int

    @property
    def params_ratio(self) -> float:
        return self.params_after / self.params_before

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / self.macs_before


def output_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """Conv/Linear layers that emit ``num_classes`` channels: the class outputs, never pruned."""
    found = [m for m in model.modules()
             if (isinstance(m, nn.Conv2d) and m.out_channels == num_classes)
             or (isinstance(m, nn.Linear) and m.out_features == num_classes)]
    if not found:
        raise SlimcvError(f"No layer of this model outputs {num_classes} classes; pass num_classes of the model.")
    return found


def prune_structured(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    num_classes: int,
    ratio: float,
    importance: str = "l1",
    global_pruning: bool = False,
    max_layer_ratio: float = 0.9,
    calibration: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> PruneResult:
    """Remove ``ratio`` of the channels of every prunable group (layer-uniform), or globally ranked."""
    if not 0 < ratio < 1:
        raise SlimcvError(f"Pruning ratio {ratio} must be between 0 and 1 (e.g. 0.3 removes 30% of channels).")
    tp = _tp()
    model.eval()
    shape = tuple(example_input.shape)
    params0, macs0 = count_params(model), count_macs(model, shape)
    imp = IMPORTANCES.get(importance)()
    try:
        pruner = tp.pruner.MetaPruner(model, example_input, importance=imp, pruning_ratio=ratio,
                                      global_pruning=global_pruning, max_pruning_ratio=max_layer_ratio,
                                      ignored_layers=output_layers(model, num_classes))
    except Exception as e:  # DepGraph tracing failures name the layer in their message
        raise SlimcvError(f"Torch-Pruning could not trace this model's dependencies ({e}); "
                          "exclude the layer it names or use unstructured pruning.") from e
    if importance == "taylor":
        _accumulate_gradients(model, calibration, loss_fn)
    pruner.step()
    model.zero_grad(set_to_none=True)
    return PruneResult(pruner.pruning_history(), params0, count_params(model), macs0, count_macs(model, shape))


def _accumulate_gradients(model: nn.Module, batches, loss_fn) -> None:
    if batches is None or loss_fn is None:
        raise SlimcvError("Importance 'taylor' needs calibration batches and a loss to compute gradients.")
    model.zero_grad(set_to_none=True)
    seen = 0
    for images, targets in batches:
        loss_fn(model(images), targets).backward()
        seen += 1
    if not seen:
        raise SlimcvError("Importance 'taylor' got an empty calibration set; pass a few training batches.")


def apply_pruning_history(model: nn.Module, history: list, input_shape: tuple[int, ...]) -> nn.Module:
    """Replay a saved pruning history on a freshly built model so pruned weights fit it."""
    tp = _tp()
    model.eval()
    graph = tp.DependencyGraph().build_dependency(model, torch.zeros(input_shape))
    try:
        graph.load_pruning_history(history)
    except (KeyError, IndexError, AttributeError) as e:
        raise SlimcvError(f"The pruning history does not fit this architecture ({e}); "
                          "rebuild with the same model name and options it was pruned from.") from e
    return model


def describe(result: PruneResult) -> dict[str, Any]:
    return {"params_before": result.params_before, "params_after": result.params_after,
            "macs_before": result.macs_before, "macs_after": result.macs_after,
            "params_ratio": result.params_ratio, "macs_ratio": result.macs_ratio}


def save_pruned(model: nn.Module, spec: dict[str, Any], result: PruneResult, input_shape: tuple[int, ...],
                out_dir) -> None:
    """Write a run folder (model.json with the pruning history, model.safetensors) that load_run_model reads."""
    from pathlib import Path

    from slimcv._io import atomic_write_json
    from slimcv.models import save_weights

    out = Path(out_dir)
    history = [*spec.get("pruning_history", []), *result.history]
    atomic_write_json(out / "model.json", {**spec, "pruning_history": history, "input_shape": list(input_shape),
                                           "pruning": describe(result)})
    save_weights(model, out / "model.safetensors")
