"""Soft filter pruning (He et al., "Soft Filter Pruning for Accelerating Deep CNNs", IJCAI 2018).

Each epoch the filters with the smallest L2 norm are zeroed but stay in the network and keep training, so
a filter zeroed too early can grow back; after the last epoch the filters still zeroed are removed
structurally (through the same DepGraph history format as hard pruning, so saving and reloading work).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from slimcv.bench.macs import count_macs, count_params
from slimcv.prune.structured import (PruneResult, _tp, apply_pruning_history, build_pruner, check_forward,
                                     rounded_ratios)


def soft_prune_step(model: nn.Module, example_input: torch.Tensor, *, num_classes: int, ratio: float,
                    ignored: Sequence[str] = (), max_layer_ratio: float = 0.9, min_channels: int = 1) -> list:
    """Zero the ``ratio`` lowest-L2 filters of every prunable group in place; return them as a pruning history."""
    tp = _tp()
    was_training = model.training
    # the paper's criterion: the L2 norm of the filter itself (the group's root), not of its consumers
    imp = tp.importance.MagnitudeImportance(p=2, group_reduction="first", normalizer=None)
    pruner = build_pruner(model, example_input, imp, num_classes=num_classes, ratio=ratio,
                          max_layer_ratio=max_layer_ratio, ignored=ignored,
                          ratio_dict=rounded_ratios(model, ratio, min_channels) if ratio > 0 else None)
    names = {m: n for n, m in model.named_modules()}
    history = []
    for group in pruner.step(interactive=True):
        root_dep, root_idxs = group[0]
        for dep, idxs in group:
            if pruner.DG.is_out_channel_pruning_fn(dep.handler):
                with torch.no_grad():
                    _zero_outputs(dep.target.module, sorted(idxs))
        history.append([names[root_dep.target.module], True, sorted(int(i) for i in root_idxs)])
    model.train(was_training)
    return history


def _zero_outputs(layer: nn.Module, idxs: list[int]) -> None:
    # only the filter and its bias, as in the paper. The BatchNorm after it is left alone: zeroing its shift
    # would make the ReLU after it output exactly 0, whose gradient is 0, and the filter could never grow back.
    # The price: a zeroed channel still emits the constant relu(beta), lost at removal (measured by the stage).
    if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.track_running_stats:
        # the statistics were gathered while the filter was alive; a zero input against them becomes
        # gamma * (-mean) / sqrt(var + eps), large when var is small. Reset them so the channel emits beta.
        layer.running_mean[idxs] = 0
        layer.running_var[idxs] = 1
        return
    if isinstance(layer, nn.ConvTranspose2d):
        layer.weight[:, idxs] = 0
    elif isinstance(layer, (nn.Conv2d, nn.Linear)):
        layer.weight[idxs] = 0
    else:
        return
    if layer.bias is not None:
        layer.bias[idxs] = 0


def remove_soft_pruned(model: nn.Module, example_input: torch.Tensor, history: list) -> PruneResult:
    """Structurally remove the filters a soft-pruning history zeroed."""
    shape = tuple(example_input.shape)
    params0, macs0 = count_params(model), count_macs(model, shape)
    apply_pruning_history(model, history, shape)
    check_forward(model, example_input)
    return PruneResult(history, params0, count_params(model), macs0, count_macs(model, shape))


def zeroed_filters(model: nn.Module, history: list) -> int:
    """How many filters named in ``history`` are still exactly zero (those that did not grow back)."""
    names = dict(model.named_modules())
    count = 0
    for name, _, idxs in history:
        w = names[name].weight
        w = w.transpose(0, 1) if isinstance(names[name], nn.ConvTranspose2d) else w
        count += int((w[idxs].flatten(1).abs().sum(1) == 0).sum())
    return count
