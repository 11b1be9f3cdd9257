"""Pruning sensitivity: prune each layer alone at several ratios, evaluate, and derive per-layer ratios.

The classic analysis from Han et al. (NeurIPS 2015) and Li et al. (ICLR 2017): layers whose accuracy barely
moves can be pruned hard, sensitive ones lightly. Each layer here is the root of a DepGraph group, so
pruning it also prunes what is coupled to it (residual partners, BatchNorm, consumers).
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimcv._console import progress_bar
from slimcv.errors import SlimcvError
from slimcv.models.detection import trace_options
from slimcv.prune.structured import IMPORTANCES, _ignored_modules, _tp, score_inputs


@dataclass
class Sensitivity:
    """Metric after pruning each layer alone: ``curves[layer][ratio]``; ``baseline`` is the unpruned metric."""

    metric: str
    baseline: float
    ratios: list[float]
    curves: dict[str, dict[float, float]] = field(default_factory=dict)
    channels: dict[str, int] = field(default_factory=dict)

    def layer_ratios(self, max_drop: float) -> dict[str, float]:
        """Per layer, the largest tested ratio whose metric drop stays within ``max_drop``."""
        out = {}
        for layer, curve in self.curves.items():
            ok = [r for r in sorted(curve) if self.baseline - curve[r] <= max_drop]
            out[layer] = max(ok) if ok else 0.0
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["curves"] = {k: {str(r): v for r, v in c.items()} for k, c in self.curves.items()}
        return d


def prunable_layers(model: nn.Module, example_input: torch.Tensor, num_classes: int,
                    ignored: Sequence[str] = ()) -> list[str]:
    """Names of the root layers of the prunable DepGraph groups (what a per-layer ratio refers to)."""
    tp = _tp()
    names = {m: n for n, m in model.named_modules()}
    with torch.enable_grad():
        graph = tp.DependencyGraph().build_dependency(model, example_input, **trace_options(model))
    groups = graph.get_all_groups(ignored_layers=_ignored_modules(model, num_classes, ignored),
                                  root_module_types=[nn.Conv2d, nn.Linear])
    return [names[g[0].dep.target.module] for g in groups if g[0].dep.target.module in names]


def prune_layer(model: nn.Module, example_input: torch.Tensor, layer: str, ratio: float, importance: str = "l1",
                calibration=None, loss_fn=None) -> int:
    """Prune ``ratio`` of the output channels of ``layer`` (and everything coupled to it); returns how many."""
    tp = _tp()
    module = dict(model.named_modules())[layer]
    with torch.enable_grad():
        graph = tp.DependencyGraph().build_dependency(model, example_input, **trace_options(model))
    fn = graph.get_pruner_of_module(module).prune_out_channels
    n = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
    k = min(int(n * ratio), n - 1)
    if k == 0:
        return 0
    imp = IMPORTANCES.get(importance)()
    score_inputs(model, importance, imp, calibration, loss_fn)
    group = graph.get_pruning_group(module, fn, idxs=list(range(n)))
    scores = imp(group)
    if scores is None:
        raise SlimcvError(f"Importance {importance!r} cannot score layer {layer!r}; use l1 or l2.")
    idxs = torch.argsort(scores)[:k].tolist()
    graph.get_pruning_group(module, fn, idxs=idxs).prune()
    model.zero_grad(set_to_none=True)
    return k


def analyze(model: nn.Module, example_input: torch.Tensor, evaluate_fn: Callable[[nn.Module], float], *,
            num_classes: int, ratios: Sequence[float] = (0.25, 0.5, 0.75), importance: str = "l1",
            layers: Sequence[str] | None = None, ignored: Sequence[str] = (), metric: str = "metric",
            progress: bool = True) -> Sensitivity:
    """Prune each layer alone at each ratio (on a copy), score it with ``evaluate_fn``, and collect the curves."""
    if not ratios or not all(0 < r < 1 for r in ratios):
        raise SlimcvError(f"Sensitivity ratios must be fractions between 0 and 1, got {list(ratios)}.")
    model.eval()
    layers = list(layers) if layers is not None else prunable_layers(model, example_input, num_classes, ignored)
    result = Sensitivity(metric, evaluate_fn(model), list(ratios))
    modules = dict(model.named_modules())
    with progress_bar("sensitivity", len(layers) * len(ratios), progress) as bar:
        for layer in layers:
            m = modules[layer]
            result.channels[layer] = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            result.curves[layer] = {}
            for r in ratios:
                trial = copy.deepcopy(model)
                prune_layer(trial, example_input, layer, r, importance)
                result.curves[layer][r] = evaluate_fn(trial)
                if bar:
                    bar(1, {"layer": float(len(result.curves))})
    return result


def plot(result: Sensitivity, path: str | Path) -> Path:
    """Metric vs pruned ratio, one line per layer (the most sensitive labelled), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slimcv._io import atomic_write

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    worst = sorted(result.curves, key=lambda k: min(result.curves[k].values()))[:8]
    for layer, curve in result.curves.items():
        xs = [0.0, *sorted(curve)]
        ys = [result.baseline, *(curve[r] for r in sorted(curve))]
        ax.plot([100 * x for x in xs], ys, marker="o", lw=1.5 if layer in worst else 0.8,
                alpha=1.0 if layer in worst else 0.35, label=layer if layer in worst else None)
    ax.axhline(result.baseline, color="black", ls="--", lw=0.8, label="unpruned")
    ax.set_xlabel("channels removed from the layer alone (%)")
    ax.set_ylabel(result.metric)
    ax.set_title("Pruning sensitivity per layer (the 8 most sensitive labelled)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return Path(path)
