"""Structured (channel) pruning: whole filters removed so the network is physically smaller.

Coupled layers (residual adds, U-Net skip concatenations, depthwise convs, BatchNorm, ASPP/LRASPP heads)
are kept consistent by Torch-Pruning's dependency graph (DepGraph, Fang et al., CVPR 2023). The layers
that produce the class outputs are never pruned. A pruned model is saved as its architecture spec plus
the pruning history (layer names and removed channel indices, plain JSON) beside safetensors weights, and
rebuilt by replaying that history on a freshly built model: no pickled modules.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from slimcv.artifact import apply_pruning_history, save_model  # noqa: F401  (apply_pruning_history: re-export)
from slimcv.bench.macs import count_macs, count_params
from slimcv.errors import SlimcvError, close_matches
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


def _activation_importance(kind: str):
    tp = _tp()
    F = tp.pruner.function

    class ActivationImportance(tp.importance.GroupMagnitudeImportance):
        """Scores channels by the activations consumer layers receive (accumulated over calibration batches)."""

        def __init__(self) -> None:
            super().__init__(p=1, group_reduction="mean", normalizer="mean",
                             target_types=[nn.Conv2d, nn.Linear])
            self.sums: dict[nn.Module, torch.Tensor] = {}
            self.counts: dict[nn.Module, int] = {}

        def observe(self, model: nn.Module) -> list:
            def hook(module, inputs, _output):
                x = inputs[0].detach()
                x = x.transpose(0, 1).reshape(x.shape[1], -1) if x.dim() == 4 else x.reshape(-1, x.shape[-1]).T
                # mean |a| (Molchanov et al. 2017) or 1 - APoZ (Hu et al. 2016): higher = more useful
                stat = x.abs().mean(1) if kind == "activation" else (x > 0).float().mean(1)
                self.sums[module] = self.sums.get(module, 0) + stat
                self.counts[module] = self.counts.get(module, 0) + 1

            return [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]

        @torch.no_grad()
        def __call__(self, group):
            imps, root = [], []
            for i, (dep, idxs) in enumerate(group):
                layer = dep.target.module
                if dep.handler not in (F.prune_conv_in_channels, F.prune_linear_in_channels) or layer not in self.sums:
                    continue
                if isinstance(layer, nn.Conv2d) and layer.groups > 1:
                    continue  # depthwise input is also its output; scored through the next pointwise conv
                stat = self.sums[layer] / self.counts[layer]
                imps.append(stat[sorted(idxs)])
                root.append(group[i].root_idxs)
            if not imps:
                return None
            return self._normalize(self._reduce(imps, root), self.normalizer)

    return ActivationImportance()


@IMPORTANCES.register("activation")
def activation():
    """Mean |activation| a channel feeds into the next layers (Molchanov et al., ICLR 2017), over calibration
    batches."""
    return _activation_importance("activation")


@IMPORTANCES.register("apoz")
def apoz():
    """1 - APoZ, the share of positive activations of a channel (Hu et al., "Network Trimming", 2016), over
    calibration batches."""
    return _activation_importance("apoz")


NEEDS_DATA = {"taylor": "gradients", "activation": "activations", "apoz": "activations"}


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


def _ignored_modules(model: nn.Module, num_classes: int, ignored: Sequence[str]) -> list[nn.Module]:
    names = dict(model.named_modules())
    unknown = [n for n in ignored if n not in names]
    if unknown:
        hint = close_matches(unknown[0], names) or f" Names look like {list(names)[1:4]}."
        raise SlimcvError(f"No layer named {unknown[0]!r} in this model to keep unpruned.{hint}")
    return outputs_of(model, num_classes) + [names[n] for n in ignored]


def outputs_of(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """The layers pruning never touches: a classifier's or segmenter's class outputs, a detector's score and
    box layers."""
    from slimcv.models.detection import is_detector, output_modules

    return output_modules(model) if is_detector(model) else output_layers(model, num_classes)


def build_pruner(model: nn.Module, example_input: torch.Tensor, imp, *, num_classes: int, ratio: float,
                 global_pruning: bool = False, max_layer_ratio: float = 0.9, ignored: Sequence[str] = (),
                 ratio_dict: dict[str, float] | None = None):
    """A Torch-Pruning MetaPruner over ``model`` that never touches the class outputs or ``ignored`` layers."""
    from slimcv.models.detection import trace_options

    tp = _tp()
    names = dict(model.named_modules())
    try:
        with torch.enable_grad():  # DepGraph traces through autograd
            return tp.pruner.MetaPruner(model, example_input, importance=imp, pruning_ratio=ratio,
                                        global_pruning=global_pruning, max_pruning_ratio=max_layer_ratio,
                                        ignored_layers=_ignored_modules(model, num_classes, ignored),
                                        pruning_ratio_dict={names[k]: v for k, v in (ratio_dict or {}).items()}
                                        or None, **trace_options(model))
    except SlimcvError:
        raise
    except ZeroDivisionError as e:  # DepGraph's reshape mapping: channels viewed into more dimensions
        shuffles = [n for n, m in model.named_modules() if type(m).__name__ == "InvertedResidual"
                    and type(m).__module__.endswith("shufflenetv2")]
        where = (f"{type(model).__name__}'s channel shuffle (a view of the channels into groups in the forward of "
                 f"{shuffles[0]} ... {shuffles[-1]}, {len(shuffles)} blocks)" if shuffles else
                 "a view or reshape of the channels into more dimensions in some forward (a channel shuffle, say)")
        raise SlimcvError(f"Torch-Pruning cannot trace {where}, so this model cannot be pruned structurally, even with "
                          "those layers ignored; use unstructured pruning "
                          "(slimcv.prune.unstructured.prune_unstructured) or another model.") from e
    except Exception as e:  # DepGraph tracing failures name the layer in their message
        raise SlimcvError(f"Torch-Pruning could not trace this model's dependencies ({e}); "
                          "keep the layer it names unpruned (ignored layers) or use unstructured pruning.") from e


def score_inputs(model: nn.Module, importance: str, imp, calibration, loss_fn) -> None:
    """Feed calibration batches for importances that need gradients (taylor) or activations."""
    need = NEEDS_DATA.get(importance)
    if need is None:
        return
    if calibration is None or (need == "gradients" and loss_fn is None):
        raise SlimcvError(f"Importance {importance!r} needs calibration batches"
                          f"{' and a loss' if need == 'gradients' else ''}; pass a few training batches.")
    hooks = imp.observe(model) if need == "activations" else []
    model.zero_grad(set_to_none=True)
    seen = 0
    try:
        for images, targets in calibration:
            if need == "gradients":
                loss_fn(model(images), targets).backward()
            else:
                with torch.no_grad():
                    model(images)
            seen += 1
    finally:
        for h in hooks:
            h.remove()
    if not seen:
        raise SlimcvError(f"Importance {importance!r} got an empty calibration set; pass a few training batches.")


def check_forward(model: nn.Module, example_input: torch.Tensor) -> None:
    """Run the pruned model once; if it fails, name the layer whose channel count the failing code hard-codes."""
    entered: list[str] = []
    done: set[str] = set()
    leaves = {n: m for n, m in model.named_modules() if n and not any(True for _ in m.children())}
    hooks = [m.register_forward_pre_hook(lambda _m, _i, n=n: entered.append(n)) for n, m in leaves.items()]
    hooks += [m.register_forward_hook(lambda _m, _i, _o, n=n: done.add(n)) for n, m in leaves.items()]
    try:
        with torch.no_grad():
            model(example_input)
    except RuntimeError as e:
        why = str(e).splitlines()[0]
        if not entered:
            where, layer = "before its first layer", None
        elif entered[-1] in done:  # between layers: code in forward() that assumes the old width
            layer = entered[-1]
            where = f"in the code right after layer {layer!r}"
        else:
            before = ", ".join(repr(n) for n in entered[-3:-1])
            where = f"inside layer {entered[-1]!r} (the layers run just before it: {before or 'none'})"
            layer = None
        keep = (f"keep layer {layer!r} unpruned with ignore=[{layer!r}] (--ignore {layer})" if layer
                else "keep the layer that produces its input unpruned with ignore=[NAME] (--ignore NAME)")
        raise SlimcvError(f"After pruning, the model fails {where} ({why}): that code uses a channel count "
                          f"Torch-Pruning cannot see; {keep}, or use unstructured pruning.") from e
    finally:
        for h in hooks:
            h.remove()


def rounded_ratios(model: nn.Module, ratio: float, min_channels: int = 1, round_to: int = 1) -> dict[str, float]:
    """Per-layer ratios that keep round(n * (1 - ratio)) of each layer's n channels (at least
    ``min_channels``, or all n when the layer is narrower), rounded to a multiple of ``round_to`` (layers of
    at most ``round_to`` channels stay whole).

    Torch-Pruning keeps int(n * (1 - ratio)) channels, so any ratio above zero takes one channel from every
    layer: a 4-channel layer loses 25% at ratio 0.03, and each step of an iterative schedule takes another. On
    narrow networks that removes the channels that matter most; rounding to the nearest count leaves such
    layers alone until the ratio really asks for a channel.
    """
    out = {}
    grouped = _norm_groups(model)
    for name, m in model.named_modules():
        # every convolution, transposed ones too (a U-Net's up-convolutions feed its narrowest layers)
        n = _width(m)
        if n:
            out[name] = _rounded(n, ratio, min_channels, math.lcm(round_to, grouped.get(name, 1)))
    return out


def _norm_groups(model: nn.Module) -> dict[str, int]:
    """Layers whose width must stay a multiple of a GroupNorm's group count (a detector's head)."""
    from slimcv.models.detection import group_norm_widths

    return group_norm_widths(model)


def _width(m: nn.Module) -> int:
    return m.out_channels if isinstance(m, _ConvNd) else m.out_features if isinstance(m, nn.Linear) else 0


def _rounded(n: int, ratio: float, min_channels: int, round_to: int) -> float:
    keep = max(min(n, min_channels), 1, round(n * (1 - ratio)))
    if round_to > 1:
        keep = n if n <= round_to else min(n, max(round_to, round(keep / round_to) * round_to))
    # Torch-Pruning keeps int(n * (1 - r)): aim half a channel above `keep` so the floor lands on it
    return max(0.0, 1 - (keep + 0.5) / n)


def check_layer_ratios(model: nn.Module, ratios: dict[str, float], round_to: int | None = None) -> dict[str, float]:
    """Per-layer ratios by layer name, checked against ``model``; with ``round_to``, rounded like layer-uniform
    pruning (kept channel counts at multiples of it)."""
    modules = dict(model.named_modules())
    out = {}
    for name, r in ratios.items():
        n = _width(modules[name]) if name in modules else 0
        if not n:
            raise SlimcvError(f"Layer ratio for {name!r}: the model has no convolution or linear layer of that name; "
                              "use the layer names of its sensitivity analysis (sensitivity.json).")
        if not 0 <= r < 1:
            raise SlimcvError(f"Layer ratio {r} for {name!r} must be at least 0 and below 1.")
        groups = _norm_groups(model).get(name, 1)
        if r > 0 and (round_to is not None or groups > 1):
            r = _rounded(n, r, 1, math.lcm(round_to or 1, groups))
        out[name] = r
    return out


def prune_structured(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    num_classes: int,
    ratio: float,
    importance: str = "l1",
    global_pruning: bool = False,
    max_layer_ratio: float = 0.9,
    ignored: Sequence[str] = (),
    ratio_dict: dict[str, float] | None = None,
    min_channels: int = 1,
    round_to: int = 1,
    calibration: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> PruneResult:
    """Remove ``ratio`` of the channels of every prunable group (layer-uniform, or ranked globally; per-layer
    ratios by root layer name in ``ratio_dict``; layer-uniform leaves every layer ``min_channels``)."""
    if not 0 < ratio < 1 and not ratio_dict:
        raise SlimcvError(f"Pruning ratio {ratio} must be between 0 and 1 (e.g. 0.3 removes 30% of channels).")
    model.eval()
    shape = tuple(example_input.shape)
    params0, macs0 = count_params(model), count_macs(model, shape)
    imp = IMPORTANCES.get(importance)()
    if not global_pruning and ratio > 0:
        ratio_dict = {**rounded_ratios(model, ratio, min_channels, round_to), **(ratio_dict or {})}
    elif ratio_dict and round_to > 1:
        ratio_dict = check_layer_ratios(model, ratio_dict, round_to)
    pruner = build_pruner(model, example_input, imp, num_classes=num_classes, ratio=ratio,
                          global_pruning=global_pruning, max_layer_ratio=max_layer_ratio, ignored=ignored,
                          ratio_dict=ratio_dict)
    score_inputs(model, importance, imp, calibration, loss_fn)
    pruner.step()
    model.zero_grad(set_to_none=True)
    check_forward(model, example_input)
    return PruneResult(pruner.pruning_history(), params0, count_params(model), macs0, count_macs(model, shape))


def describe(result: PruneResult) -> dict[str, Any]:
    return {"params_before": result.params_before, "params_after": result.params_after,
            "macs_before": result.macs_before, "macs_after": result.macs_after,
            "params_ratio": result.params_ratio, "macs_ratio": result.macs_ratio}


def pruned_spec(spec: dict[str, Any], history: list, input_shape: Sequence[int]) -> dict[str, Any]:
    """The model.json of ``spec`` after ``history``: what load_run_model replays on a freshly built model."""
    return {**spec, "pruning_history": [*spec.get("pruning_history", []), *history], "input_shape": list(input_shape)}


def save_pruned(model: nn.Module, spec: dict[str, Any], result: PruneResult, input_shape: tuple[int, ...],
                out_dir) -> None:
    """Write a model folder (model.json with the pruning history, model.safetensors) that load_run_model reads."""
    save_model(model, out_dir, {**pruned_spec(spec, result.history, input_shape), "pruning": describe(result)})
