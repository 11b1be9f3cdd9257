"""Candidates for a latency budget, measured before any training: an untrained network runs as fast as a trained one.

The candidates are the source model itself on every runtime (so a search never returns something slower than
deploying the source well), structurally pruned copies of it at several ratios, and students from efficient
families at several widths and input resolutions. Each is exported to ONNX at the deployment size and timed at
batch 1 in each runtime, all in one interleaved measurement with the source in ONNX Runtime FP32 as the
reference, beside the source as an OpenVINO INT8 file made by NNCF (where NNCF is installed): the peer a CPU user
would otherwise reach for. The other networks' INT8 files are made and timed only where they can change the
answer, in a second run with the reference again. Those within the budget are what training then spends its
time on.
"""
from __future__ import annotations

import copy
import dataclasses
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimcv._console import console
from slimcv.config import SearchSpace
from slimcv.deploy.chooser import Candidate  # noqa: F401  (the search's candidates are deployment candidates)
from slimcv.deploy import runtimes as runtime_table
from slimcv.errors import SlimcvError

# the latency every speed-up is relative to: the source in ONNX Runtime FP32
REFERENCE = f"source/{runtime_table.Row(runtime_table.ORT).label}"
ROUND_TO = SearchSpace.model_fields["round_to"].default  # for candidates recorded before spaces had their own


def default_students(task: str, input_hw: tuple[int, int]) -> list[tuple[str, dict[str, Any]]]:
    """Students from CPU-efficient families at several sizes: LR-ASPP MobileNetV3 at three widths and two input
    resolutions and narrow U-Nets for segmentation; shallower CIFAR ResNets or MobileNets for classification;
    slimdet at several widths for detection."""
    if task == "detection":  # slimdet narrower and shallower at the data's size, and slimdet_s at 3/4 of it
        size = {"size": list(input_hw)}
        smaller = {"size": [max(32, round(0.75 * n / 32) * 32) for n in input_hw]}  # strides divide it
        return [("slimdet_s", {**size, "width": w}) for w in (0.5, 0.75, 1.0)] + [
            ("slimdet_s", {**size, "fpn_channels": 32, "head_convs": 1}), ("slimdet_m", {**size, "width": 0.75}),
            ("slimdet_s", smaller)]
    if task == "segmentation":
        out = [("lraspp_mobilenet", {"width_mult": w, "input_scale": s}) for w in (0.5, 0.75, 1.0) for s in (1.0, 0.5)]
        return out + [("unet", {"base_width": w, "depth": 4}) for w in (4, 8)]
    if max(input_hw) <= 64:  # CIFAR-sized inputs
        return [("resnet8", {}), ("resnet14", {}), ("resnet20", {})]
    # BatchNorm statistics that keep up with a short schedule from scratch (torchvision's MobileNetV3 uses 0.01)
    return [("mobilenet_v3_small", {"bn_momentum": 0.1}), ("mobilenet_v3_large", {"bn_momentum": 0.1}),
            ("resnet18", {})]


def enumerate_candidates(source: nn.Module, example: torch.Tensor, num_classes: int, task: str,
                         space: SearchSpace, layer_ratios: dict[str, dict[str, float]] | None = None
                         ) -> list[tuple[Candidate, nn.Module]]:
    """Every candidate network (untrained students, pruned copies) with its parameter and MAC counts, once per
    runtime that can run here. ``layer_ratios`` names sensitivity-guided pruned copies: name -> per-layer
    ratios (from ``sensitivity_ratios``)."""
    from slimcv.bench.macs import count_macs
    from slimcv.deploy.runtimes import available
    from slimcv.models import create_model
    from slimcv.prune.structured import prune_structured

    here = {r.name for r in available()}
    runtimes = [r for r in (space.runtimes or (runtime_table.ORT, runtime_table.OPENVINO)) if r in here]
    if not runtimes:
        raise SlimcvError(f"None of the runtimes {list(space.runtimes or ())} can run here; install onnxruntime.")
    shape = tuple(example.shape)
    nets: list[tuple[str, str, dict[str, Any], nn.Module]] = [("source", "source", {}, source)]
    for ratio in space.prune_ratios:
        pruned = copy.deepcopy(source).cpu().eval()
        try:
            prune_structured(pruned, example, num_classes=num_classes, ratio=ratio, round_to=space.round_to)
        except SlimcvError as e:
            console.print(f"[dim]pruned {ratio:g}: skipped ({e})[/]")
            continue
        nets.append((f"pruned_{ratio:g}", "pruned", {"prune_ratio": ratio, "round_to": space.round_to}, pruned))
    for name, ratios in (layer_ratios or {}).items():
        if not any(r > 0 for r in ratios.values()):
            console.print(f"[dim]{name}: skipped (no layer can be pruned within its drop)[/]")
            continue
        pruned = copy.deepcopy(source).cpu().eval()
        prune_structured(pruned, example, num_classes=num_classes, ratio=0.0, round_to=space.round_to,
                         ratio_dict={k: v for k, v in ratios.items() if v > 0})
        nets.append((name, "pruned", {"layer_ratios": dict(ratios), "round_to": space.round_to}, pruned))
    source_keys = set(source.state_dict())
    students = space.students if space.students is not None else default_students(task, tuple(shape[-2:]))
    for name, kwargs in students:
        label = "-".join([name] + [f"{k}{v:g}" if isinstance(v, (int, float)) else f"{k}{v}"
                                   for k, v in sorted(kwargs.items())])
        net = create_model(name, num_classes, **kwargs).eval()
        build: dict[str, Any] = {"model": name, "model_kwargs": dict(kwargs)}
        copied, total = inherit_weights(source, net)
        if copied == total and set(net.state_dict()) == source_keys:
            console.print(f"[dim]{label}: skipped (the source's own architecture)[/]")
            continue
        if copied >= total / 2:  # a shallower network of the source's family starts from its weights
            build["inherit"] = True
            label += "-inherited"
        nets.append((label, "student", build, net))
    from slimcv.quantize.nncf_ptq import unavailable

    # an INT8 file runs in OpenVINO: tried wherever either OpenVINO runtime is (its FP32 layers in OpenVINO's default)
    with_openvino = {runtime_table.OPENVINO, runtime_table.OPENVINO_F32} & set(runtimes)
    int8 = set(space.int8) if with_openvino and unavailable() is None else set()
    out = []
    for label, kind, build, net in nets:
        params, macs = sum(p.numel() for p in net.parameters()), count_macs(net, shape)
        for rt in runtimes:
            out.append((Candidate(label, runtime=rt, kind=kind, build=build, params=params, macs=macs), net))
        if kind in int8:
            out.append((Candidate(label, runtime=runtime_table.OPENVINO, precision="int8", kind=kind, build=build,
                                  params=params, macs=macs), net))
    return out


def measure(candidates: list[tuple[Candidate, nn.Module]], example: torch.Tensor, *, runs: int = 15,
            threads: int | None = 1, workdir: str | Path | None = None,
            calibration: Sequence[torch.Tensor] = (), budget_of: Callable[[float], float] | None = None) -> float:
    """Time every candidate at batch 1 in one interleaved run; fills ``latency_ms`` and ``speedup``. Returns the
    reference latency (the source in ONNX Runtime FP32). INT8 candidates are quantized by NNCF on
    ``calibration`` (images of the dataset; default: the example): INT8 speed does not depend on the weights.
    With ``budget_of`` (the reference's latency -> the budget), a compressed network's INT8 file is also timed
    with its first and last layers in FP32 (more accurate, a little slower), and is that file where it meets the
    budget (``build["fp32_ends"]``); the source's stays NNCF's defaults, the peer."""
    from slimcv.bench.latency import time_interleaved
    from slimcv.config import ExportConfig
    from slimcv.deploy.deployed import deployed_runner
    from slimcv.export.onnx import to_onnx

    if not any(c.key == REFERENCE for c, _ in candidates):
        raise SlimcvError("The candidates must include the source in ONNX Runtime (the reference).")
    with tempfile.TemporaryDirectory(prefix="slimcv-search-", dir=workdir) as tmp:
        files: dict[int, Path] = {}
        runners = {}
        for c, net in candidates:
            deployed, x = _network(net.cpu().eval(), example)
            if id(net) not in files:
                path = Path(tmp) / f"{c.name}.onnx"
                to_onnx(deployed, x, path, ExportConfig(batch=1), dynamic_hw=False)
                files[id(net)] = path
            path = files[id(net)]
            if c.precision == "int8":
                images = [_resized(i, x.shape[-2:]) for i in (calibration or [example])]
                if budget_of is not None and c.kind != "source":
                    ends = _nncf_int8(path, Path(tmp) / f"{c.name}_int8_ends.xml", images, _end_layers(path))
                    runners[c.key + ENDS] = deployed_runner(ends, x, c.runtime, threads)
                path = _nncf_int8(path, Path(tmp) / f"{c.name}_int8.xml", images)
            runners[c.key] = deployed_runner(path, x, c.runtime, threads)
        timings = time_interleaved(runners, runs=runs, threads=threads)
    ref = timings[REFERENCE].median_ms
    budget = budget_of(ref) if budget_of is not None else None
    for c, _ in candidates:
        c.latency_ms = timings[c.key].median_ms
        ends = timings.get(c.key + ENDS)
        if ends is not None:
            c.build = {k: v for k, v in c.build.items() if k != "fp32_ends"}
            if ends.median_ms <= budget:
                c.latency_ms = ends.median_ms
                c.build["fp32_ends"] = True
            else:
                c.notes.append(f"INT8 with its first and last layers in FP32: {ref / ends.median_ms:.2f}x, over the "
                               "budget; NNCF's defaults kept")
        c.speedup = ref / c.latency_ms
    return ref


ENDS = "+fp32_ends"  # the timing of an INT8 file with its first and last layers in FP32


def _end_layers(onnx_path: Path) -> list[str]:
    import onnx

    from slimcv.quantize.ptq import end_layers

    return end_layers(onnx.load(str(onnx_path)))


INT8_REACH = 1.25  # an INT8 file is timed when, sped up as much as the source's was, it comes this close to the budget
FRONTIER_GAIN = 1.2  # a pruned copy this much faster than the source at its fastest may be the frontier's point


def measure_fp32_first(candidates: list[tuple[Candidate, nn.Module]], example: torch.Tensor,
                       budget_of: Callable[[float], float], *, runs: int = 15, threads: int | None = 1,
                       workdir: str | Path | None = None, calibration: Sequence[torch.Tensor] = (),
                       int8_always: bool = False) -> tuple[list[tuple[Candidate, nn.Module]], float]:
    """Time every network in FP32 and the source as INT8, then only the INT8 files that can change the answer
    (``int8_worth_timing``; every one with ``int8_always``), with the reference again so both runs share one
    scale. Returns the candidates timed and the reference latency; ``budget_of`` maps the reference to the budget
    in milliseconds."""
    if int8_always:
        return candidates, measure(candidates, example, runs=runs, threads=threads, workdir=workdir,
                                   calibration=calibration, budget_of=budget_of)
    first = [(c, n) for c, n in candidates if c.precision != "int8" or c.kind == "source"]
    reference = measure(first, example, runs=runs, threads=threads, workdir=workdir, calibration=calibration)
    second = int8_worth_timing(candidates, budget_of(reference))
    if second:
        ref, net = next((c, n) for c, n in first if c.key == REFERENCE)
        budget = budget_of(reference)  # on this run's scale: its latencies go onto the first run's below
        again = measure([(dataclasses.replace(ref, notes=[]), net), *second], example, runs=runs, threads=threads,
                        workdir=workdir, calibration=calibration, budget_of=lambda r: budget * r / reference)
        for c, _ in second:  # on the first run's scale: the machine may have sped up or slowed down in between
            c.latency_ms *= reference / again
            c.speedup = reference / c.latency_ms
    return first + second, reference


def int8_worth_timing(candidates: list[tuple[Candidate, nn.Module]], budget_ms: float
                      ) -> list[tuple[Candidate, nn.Module]]:
    """The INT8 candidates (not the source's) worth quantizing and timing, given every network's FP32 latency and
    the source's INT8 one: a network whose FP32 file meets the budget needs no INT8 file (the search keeps the most
    accurate, and INT8 never scores higher), and one that would miss the budget by more than ``INT8_REACH`` even
    with the source's INT8 speed-up cannot reach it, unless it is a pruned copy that would then run
    ``FRONTIER_GAIN`` times faster than the source at its fastest (a point of the frontier on a miss). A note on
    the network's fastest FP32 candidate says why one is not timed."""
    fastest = fastest_each(c for c, _ in candidates if c.precision == "fp32")
    source_int8 = next((c for c, _ in candidates if c.kind == "source" and c.precision == "int8"
                        and c.latency_ms), None)
    gain = max(1.0, fastest["source"].latency_ms / source_int8.latency_ms) if source_int8 and "source" in fastest \
        else None
    source_ms = min(c.latency_ms for c in (fastest.get("source"), source_int8) if c is not None) if gain else None
    keep = []
    for c, net in candidates:
        if c.precision != "int8" or c.kind == "source":
            continue
        best = fastest.get(c.name)
        if best is not None and best.latency_ms <= budget_ms:
            best.notes.append("INT8 not timed: its FP32 file already meets the budget")
        elif best is not None and gain is not None and best.latency_ms / gain > budget_ms * INT8_REACH and not (
                c.kind == "pruned" and best.latency_ms / gain * FRONTIER_GAIN <= source_ms):
            best.notes.append(f"INT8 not timed: even {gain:.2f}x faster, as the source's INT8 file is, it would miss "
                              "the budget")
        else:
            keep.append((c, net))
    skipped = sum(c.precision == "int8" and c.kind != "source" for c, _ in candidates) - len(keep)
    if skipped:
        console.print(f"[dim]INT8 timed for {len(keep)} of {len(keep) + skipped} networks besides the source: the "
                      "others meet the budget in FP32 or cannot reach it[/]", highlight=False, soft_wrap=True)
    return keep


def _network(net: nn.Module, example: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """What is deployed of ``net`` and the input it takes for ``example``: a detector's static network (its box
    selection runs beside it) at the size its transform resizes the images to (smaller for a lower-resolution
    student: the deployed predictor resizes them), else the network and the example as they are."""
    from slimcv.models.detection import DenseDetector, deployed_size, is_detector

    if not is_detector(net):
        return net, example
    size = deployed_size(net, tuple(example.shape[-2:]))
    return DenseDetector(net, size), _resized(example, size)


def _resized(x: torch.Tensor, size) -> torch.Tensor:
    import torch.nn.functional as F

    if tuple(x.shape[-2:]) == tuple(size):
        return x
    batch = x if x.ndim == 4 else x[None]
    out = F.interpolate(batch, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return out if x.ndim == 4 else out[0]


def _nncf_int8(fp32: Path, xml: Path, images: Sequence[torch.Tensor], keep_fp32: Sequence[str] = ()) -> Path:
    from slimcv.quantize.nncf_ptq import quantize_nncf

    with console.status(f"NNCF INT8 of {fp32.stem}"):
        return quantize_nncf(fp32, xml, [x.reshape(1, *x.shape[-3:]).numpy() for x in images], keep_fp32=keep_fp32)


def inherit_weights(source: nn.Module, student: nn.Module) -> tuple[int, int]:
    """Copy into ``student`` every tensor of ``source`` with the same name and shape: a shallower ResNet keeps the
    source's stem, the first blocks of each stage and the classifier (depth pruning). Returns (copied, total)."""
    own = student.state_dict()
    same = {k: v for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape}
    student.load_state_dict(same, strict=False)
    # counted without the BatchNorm step counters: 0-d tensors match between any two networks
    return sum(1 for v in same.values() if v.ndim), sum(1 for v in own.values() if v.ndim)


def sensitivity_candidates(sens, drops: Sequence[float]) -> dict[str, dict[str, float]]:
    """Sensitivity-guided pruned copies, ``pruned_sens<drop>``: per layer the largest tested ratio whose drop
    (that layer pruned alone) stays within ``drop`` points; copies that prune the same are kept once."""
    out: dict[str, dict[str, float]] = {}
    for d in sorted(drops):
        ratios = sens.layer_ratios(d)
        if ratios not in out.values():
            out[f"pruned_sens{d:g}"] = ratios
    return out


def within_budget(candidates: Sequence[Candidate], reference_ms: float, *, target_latency_ms: float | None = None,
                  target_speedup: float | None = None) -> float:
    """Mark the candidates that meet the budget; returns the budget in milliseconds."""
    if (target_latency_ms is None) == (target_speedup is None):
        raise SlimcvError("Give one target: a latency in milliseconds or a speed-up over the source.")
    if target_speedup is not None and target_speedup <= 0 or target_latency_ms is not None and target_latency_ms <= 0:
        raise SlimcvError("The target must be positive.")
    budget = target_latency_ms if target_latency_ms is not None else reference_ms / target_speedup
    for c in candidates:
        c.meets = c.latency_ms is not None and c.latency_ms <= budget
    return budget


def fastest_each(candidates: Iterable[Candidate]) -> dict[str, Candidate]:
    """Per network, its fastest timed candidate among ``candidates``."""
    best: dict[str, Candidate] = {}
    for c in candidates:
        if c.latency_ms is not None and (c.name not in best or c.latency_ms < best[c.name].latency_ms):
            best[c.name] = c
    return best


def best_runtime_each(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Per network, the candidate of its fastest runtime among those that meet the budget."""
    return sorted(fastest_each(c for c in candidates if c.meets).values(), key=lambda c: c.latency_ms)
