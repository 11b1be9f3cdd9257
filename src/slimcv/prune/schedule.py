"""Iterative structured pruning toward a target: N steps of (prune -> fine-tune -> evaluate)."""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from slimcv.bench.macs import count_macs, count_params
from slimcv.errors import SlimcvError
from slimcv.prune.structured import PruneResult, prune_structured

Target = Literal["params", "macs"]


def _size(model: nn.Module, shape: tuple[int, ...], target: Target) -> int:
    return count_params(model) if target == "params" else count_macs(model, shape)


def ratio_for(model: nn.Module, example: torch.Tensor, goal: int, target: Target, *, tol: float = 0.002,
              **prune_kwargs: Any) -> float:
    """The channel ratio whose pruning brings ``model`` to ``goal`` params/MACs (bisection on copies)."""
    lo, hi = 0.0, 0.95
    shape = tuple(example.shape)
    start = _size(model, shape, target)
    for _ in range(12):
        mid = (lo + hi) / 2
        trial = copy.deepcopy(model)
        prune_structured(trial, example, ratio=mid, **prune_kwargs)
        got = _size(trial, shape, target)
        if abs(got - goal) <= tol * start:
            return mid
        lo, hi = (mid, hi) if got > goal else (lo, mid)
    return (lo + hi) / 2


def prune_to_target(
    model: nn.Module,
    example: torch.Tensor,
    *,
    num_classes: int,
    remove: float,
    target: Target = "params",
    steps: int = 1,
    importance: str = "l1",
    fine_tune: Callable[[nn.Module, int], dict[str, Any]] | None = None,
    **prune_kwargs: Any,
) -> list[dict[str, Any]]:
    """Remove ``remove`` (e.g. 0.3 = 30%) of the model's params or MACs in ``steps`` equal steps; after each
    step ``fine_tune(model, step)`` may train and return metrics. Returns one record per step."""
    if not 0 < remove < 1:
        raise SlimcvError(f"remove={remove} must be a fraction between 0 and 1 (0.3 removes 30%).")
    shape = tuple(example.shape)
    start = _size(model, shape, target)
    records, history = [], []
    for step in range(1, steps + 1):
        goal = round(start * (1 - remove * step / steps))
        kwargs = dict(num_classes=num_classes, importance=importance, **prune_kwargs)
        ratio = ratio_for(model, example, goal, target, **kwargs)
        result: PruneResult = prune_structured(model, example, ratio=ratio, **kwargs)
        history += result.history
        record = {"step": step, "channel_ratio": ratio, "params": count_params(model),
                  "macs": count_macs(model, shape), "achieved_remove": 1 - _size(model, shape, target) / start}
        if fine_tune is not None:
            record["metrics"] = fine_tune(model, step)
        records.append(record)
    records[-1]["history"] = history
    return records
