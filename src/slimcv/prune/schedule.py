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

Target = Literal["params", "macs", "latency"]


class _Meter:
    """Params, MACs, or batch-1 eager latency measured interleaved with the unpruned reference, so a noisy
    machine's drift cancels in the ratio."""

    def __init__(self, model: nn.Module, example: torch.Tensor, target: Target, runs: int = 15) -> None:
        if target not in ("params", "macs", "latency"):
            raise SlimcvError(f"Unknown pruning target {target!r}; use params, macs or latency.")
        self.target, self.shape, self.runs = target, tuple(example.shape), runs
        self.example = example[:1]
        self.reference = copy.deepcopy(model).eval() if target == "latency" else None

    def __call__(self, model: nn.Module) -> float:
        if self.target == "params":
            return count_params(model)
        if self.target == "macs":
            return count_macs(model, self.shape)
        from slimcv.bench.latency import eager_runner, time_interleaved

        t = time_interleaved({"ref": eager_runner(self.reference, self.example),
                              "model": eager_runner(model, self.example)}, warmup=2, runs=self.runs)
        return 1000.0 * t["model"].median_ms / t["ref"].median_ms  # per mille of the unpruned latency


def ratio_for(model: nn.Module, example: torch.Tensor, goal: float, target: Target | _Meter, *,
              tol: float = 0.002, **prune_kwargs: Any) -> float:
    """The channel ratio whose pruning brings ``model`` closest to ``goal`` params/MACs/latency (bisection on
    copies; channel counts are whole, so the best of the ratios tried is returned when none is within tol)."""
    lo, hi = 0.0, 0.95
    measure = target if isinstance(target, _Meter) else _Meter(model, example, target)
    start = measure(model)
    best = (float("inf"), hi)
    for _ in range(12):
        mid = (lo + hi) / 2
        trial = copy.deepcopy(model)
        prune_structured(trial, example, ratio=mid, **prune_kwargs)
        got = measure(trial)
        best = min(best, (abs(got - goal), mid))
        if abs(got - goal) <= tol * start:
            return mid
        lo, hi = (mid, hi) if got > goal else (lo, mid)
    # a latency reading is noisy: the bracket the bisection narrowed is safer than its luckiest single trial
    return (lo + hi) / 2 if measure.target == "latency" else best[1]


def prune_to_target(
    model: nn.Module,
    example: torch.Tensor,
    *,
    num_classes: int,
    remove: float,
    target: Target = "params",
    steps: int = 1,
    importance: str = "l1",
    fine_tune: Callable[[nn.Module, int, list], dict[str, Any]] | None = None,
    **prune_kwargs: Any,
) -> list[dict[str, Any]]:
    """Remove ``remove`` (e.g. 0.3 = 30%) of the model's params, MACs or latency in ``steps`` steps that each
    remove the same fraction of what is left; after each step ``fine_tune(model, step, history)`` may train and
    return metrics (``history``: the pruning so far). Returns one record per step. A latency target is met
    within the measurement noise of batch-1 eager timing, not to the 1% of params/MACs."""
    if not 0 < remove < 1:
        raise SlimcvError(f"remove={remove} must be a fraction between 0 and 1 (0.3 removes 30%).")
    shape = tuple(example.shape)
    measure = _Meter(model, example, target)
    start = measure(model)
    records, history = [], []
    for step in range(1, steps + 1):
        # geometric: every step removes the same fraction of what is left (equal absolute steps make the last
        # one brutal: 10x fewer MACs in 4 equal steps ends by removing 69% of the remaining MACs at once)
        goal = start * (1 - remove) ** (step / steps)
        kwargs = dict(num_classes=num_classes, importance=importance, **prune_kwargs)
        ratio = ratio_for(model, example, goal, measure, tol=0.02 if target == "latency" else 0.002, **kwargs)
        result: PruneResult = prune_structured(model, example, ratio=ratio, **kwargs)
        history += result.history
        record = {"step": step, "channel_ratio": ratio, "params": count_params(model),
                  "macs": count_macs(model, shape), "achieved_remove": 1 - measure(model) / start}
        if fine_tune is not None:
            record["metrics"] = fine_tune(model, step, list(history))
        records.append(record)
    records[-1]["history"] = history
    return records
