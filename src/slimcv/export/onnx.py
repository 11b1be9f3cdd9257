"""ONNX export of any slimcv model (pruned ones included), checked in ONNX Runtime against PyTorch.

The TorchScript exporter (``torch.onnx.export(..., dynamo=False)``) is the default: on every registered family
(U-Net, CIFAR and torchvision ResNets, MobileNet/ShuffleNet/EfficientNet, LRASPP/DeepLabV3, a pruned U-Net) it
and the torch.export-based exporter gave the same logits, but it exported 3-10x faster and it is the one that turns
quantization-aware-training fake-quant modules into QuantizeLinear/DequantizeLinear (the dynamo exporter
rejected them); see docs/quantization.md. ``exporter="dynamo"`` selects the other one.

Tracing records the Python branches the example takes (the U-Net pads inputs whose size is not a multiple of
16). With dynamic height/width the example is therefore traced at an odd size, which takes the general branch,
and the export is then checked on real validation samples at their own size.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimcv._console import print_table
from slimcv._io import atomic_write, atomic_write_json
from slimcv.config import ExportConfig, build_config
from slimcv.errors import SlimcvError
from slimcv.export.verify import Agreement, compare
from slimcv.run_folder import read_json

MIN_OPSET = 13  # per-channel QuantizeLinear (axis) needs 13


@dataclass
class ExportResult:
    """The exported file, its sidecar (preprocessing for deployment) and the measured agreement."""

    path: Path
    sidecar: Path
    opset: int
    exporter: str
    file_bytes: int
    agreement: Agreement | None
    meta: dict[str, Any] = field(default_factory=dict)


def export(source: str | Path | nn.Module, out: str | Path = "model.onnx", data: Any = None, *,
           num_classes: int | None = None, model: str | None = None, weights: str | Path | None = None,
           **options: Any) -> ExportResult:
    """Export a module, model folder, or model name / factory with ``weights`` to ONNX and check it in ONNX
    Runtime; ``data`` (a spec or (train, val) Datasets) gives the check samples and the preprocessing."""
    from slimcv.artifact import source_label
    from slimcv.engine.evaluation import load_model

    cfg = build_config(ExportConfig, options, "export options")
    bundle = resolve_data(source, data)
    net, name = load_model(source, num_classes or (bundle.num_classes if bundle else None), model, weights)
    task = bundle.task if bundle else _guess_task(net)
    meta = sidecar_meta(bundle, task, name, source_label(source))
    spec = getattr(net, "_slimcv_spec", None)
    if spec:  # how to rebuild the PyTorch model this file came from
        meta["architecture"] = {k: v for k, v in spec.items() if k != "pruning_history"}
    if task == "detection":
        net, cfg = detection_network(net.cpu().eval(), bundle, cfg, meta)
    result = export_module(net.cpu().eval(), out, sample_batches(bundle, cfg, net), task=task, cfg=cfg, meta=meta)
    _print(result)
    return result


def export_module(net: nn.Module, out: str | Path, batches: list[torch.Tensor], *, task: str, cfg: ExportConfig,
                  meta: dict[str, Any]) -> ExportResult:
    """Export ``net`` traced on ``batches[0]``, write the sidecar, and compare with PyTorch on all ``batches``."""
    _check_opset(cfg.opset)
    out = Path(out)
    if out.is_dir() or str(out).endswith(("/", "\\")):  # -o FOLDER, as for the other commands
        out = out / "model.onnx"
    _check_ours(out)
    dynamic_hw = task == "segmentation" if cfg.dynamic_hw is None else cfg.dynamic_hw
    example = trace_example(batches[0], cfg, dynamic_hw)
    if dynamic_hw and not _runs(net, example):
        example = trace_example(batches[0], cfg, False)  # a model that needs even sizes: trace at the data's own
    atomic_write(out, lambda tmp: to_onnx(net, example, tmp, cfg, dynamic_hw))
    if cfg.simplify:
        simplify(out)
    agreement = None
    if cfg.check:
        from slimcv.deploy.runtimes import ort_session

        checked = batches if dynamic_hw else [b for b in batches if b.shape[-2:] == example.shape[-2:]] or [example]
        if cfg.batch != "dynamic":
            pool = torch.cat(checked)
            pool = pool.repeat(-(-cfg.batch // pool.shape[0]), 1, 1, 1) if pool.shape[0] < cfg.batch else pool
            checked = [pool[i:i + cfg.batch] for i in range(0, pool.shape[0] - cfg.batch + 1, cfg.batch)]
        agreement = compare(net, ort_session(out), checked, meta.get("samples", "real"))
        # a detector's boxes come from its outputs by the same numpy code in both: once the outputs agree, a box
        # kept by one and not the other is a tie (an undertrained net scores many anchors exactly alike) that a
        # 1e-6 difference breaks either way, so the share of shared boxes is shown, not required
        needed = 0.0 if task == "detection" else cfg.min_agreement
        if not agreement.passed(cfg.atol, cfg.rtol, needed):
            raise SlimcvError(
                f"ONNX Runtime disagrees with PyTorch on {out}: max |logit diff| {agreement.max_abs_diff:.3g} "
                f"(allowed {cfg.atol + cfg.rtol * agreement.max_abs_logit:.3g}), argmax agreement "
                f"{100 * agreement.argmax_agreement:.2f}%; try --exporter dynamo or another --opset.")
    full_meta = {**meta, "task": task, "opset": cfg.opset, "exporter": cfg.exporter,
                 "precision": meta.get("precision", "fp32"), "input_name": "input", "batch": cfg.batch,
                 "dynamic_hw": dynamic_hw, "input_size": list(example.shape[-2:]),
                 "agreement": agreement.to_dict() if agreement else None}
    sidecar = write_sidecar(out, full_meta)
    return ExportResult(out, sidecar, cfg.opset, cfg.exporter, out.stat().st_size, agreement, full_meta)


def detection_network(net: nn.Module, bundle, cfg: ExportConfig, meta: dict[str, Any]) -> tuple[nn.Module, ExportConfig]:
    """A detector as its static network (boxes and scores for every anchor) at one input size; box selection
    (threshold, NMS) is recorded in ``meta`` and runs beside the graph, the same in every runtime."""
    from slimcv.models.detection import DenseDetector, deployed_size, is_detector

    if cfg.dynamic_hw:
        raise SlimcvError("A detector exports at one input size (its anchors are fixed); drop --dynamic-hw and set "
                          "the size with --size H W.")
    if not isinstance(net, DenseDetector):
        if not is_detector(net):
            raise SlimcvError(f"{type(net).__name__} is not a torchvision-style detector; detection export takes "
                              "slimdet or a torchvision SSD, RetinaNet or FCOS model.")
        size = cfg.size or deployed_size(net, bundle and _data_hw(bundle))
        net = DenseDetector(net, size)
    meta.update(detection_meta(net))
    return net, cfg.model_copy(update={"dynamic_hw": False, "size": net.size})


def detection_meta(net: nn.Module) -> dict[str, Any]:
    """What the sidecar records about box selection: input size, thresholds, NMS IoU, anchors per level."""
    from slimcv.deploy.boxes import PREDICT_THRESHOLD

    return {"selection": net.selection.to_json(), "score_threshold": PREDICT_THRESHOLD,
            "resize": list(net.size), "center_crop": None, "detector": net.kind,
            "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}  # the network normalises its [0, 1] input itself




def _data_hw(bundle) -> tuple[int, int] | None:
    from slimcv.artifact import data_input_shape

    h, w = data_input_shape(bundle)[-2:]
    return (h, w)


def to_onnx(net: nn.Module, example: torch.Tensor, path: str | Path, cfg: ExportConfig, dynamic_hw: bool) -> None:
    """Run the chosen exporter; its errors (unsupported operators, opsets) become one-sentence SlimcvErrors."""
    axes = {0: "batch"} if cfg.batch == "dynamic" else {}
    if dynamic_hw:
        axes.update({2: "height", 3: "width"})
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            if cfg.exporter == "torchscript":
                torch.onnx.export(net, (example,), str(path), dynamo=False, opset_version=cfg.opset,
                                  input_names=["input"], output_names=[_output(net)], do_constant_folding=True,
                                  dynamic_axes={"input": axes, _output(net): dict(axes)} if axes else None)
            else:
                dims = {i: torch.export.Dim(n, min=1 if i == 0 else 8) for i, n in axes.items()}
                prog = torch.onnx.export(net, (example,), dynamo=True, opset_version=max(cfg.opset, 18),
                                         input_names=["input"], output_names=[_output(net)],
                                         dynamic_shapes={"x": dims} if dims else None, optimize=True)
                prog.save(str(path))
    except SlimcvError:
        raise
    except OSError as e:  # the disk, not the exporter: no opset advice for a full disk
        raise SlimcvError(f"Cannot write {path}: {(e.strerror or str(e)).lower()}; free some space or choose "
                          "another -o.") from e
    except Exception as e:  # torch.onnx raises many types (UnsupportedOperatorError, SymbolicValueError, ...)
        if isinstance(e.__cause__ or e.__context__, OSError):
            raise SlimcvError(f"Cannot write {path}: {e.__cause__ or e.__context__}; free some space or choose "
                              "another -o.") from e
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SlimcvError(f"Cannot export {type(net).__name__} to ONNX opset {cfg.opset} with the {cfg.exporter} "
                          f"exporter: {first[:300]}; try a higher --opset or --exporter "
                          f"{'dynamo' if cfg.exporter == 'torchscript' else 'torchscript'}.") from e


def _output(net: nn.Module) -> str:
    return "detections" if hasattr(net, "selection") else "logits"


def _runs(net: nn.Module, x: torch.Tensor) -> bool:
    try:
        with torch.no_grad():
            net(x)
    except RuntimeError:
        return False
    return True


def simplify(path: str | Path) -> None:
    """Constant-fold and drop dead nodes with onnxscript's optimizer, in place."""
    import onnx
    from onnxscript import optimizer

    model = onnx.load(str(path))
    model = optimizer.optimize(model)
    atomic_write(path, lambda tmp: onnx.save(model, tmp))


def trace_example(batch: torch.Tensor, cfg: ExportConfig, dynamic_hw: bool) -> torch.Tensor:
    """The tracing input: the fixed batch if asked; with dynamic H/W an odd size, so size branches go general."""
    x = batch[:1] if cfg.batch == "dynamic" else batch[:1].expand(cfg.batch, *batch.shape[1:]).contiguous()
    if cfg.size is not None:
        x = F.interpolate(x, size=tuple(cfg.size), mode="bilinear", align_corners=False)
    if dynamic_hw:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, 1 - w % 2, 0, 1 - h % 2), mode="replicate")
    return x


def resolve_data(source: Any, data: Any):
    """The DataBundle for ``data``, or the run folder's own data settings, or None."""
    from slimcv.artifact import is_model_folder, read_model_spec, run_data_config
    from slimcv.data import as_bundle

    if isinstance(data, str) and isinstance(source, (str, Path)) and is_model_folder(source):
        data = run_data_config(source, data)  # the data moved: the recorded size (the deployed one) stays
    if data is not None:
        if isinstance(source, (str, Path)) and is_model_folder(source) and isinstance(data, (tuple, list)):
            spec = read_model_spec(source)
            return as_bundle(data, num_classes=spec["num_classes"], class_names=spec.get("class_names"))
        return as_bundle(data, model=source if isinstance(source, nn.Module) else None)
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        own = run_data_config(source)
        if own is not None:
            return as_bundle(own)
    return None


def sample_batches(bundle, cfg: ExportConfig, net: nn.Module, batch_size: int = 4) -> list[torch.Tensor]:
    """Up to ``cfg.samples`` real validation images in batches (random images when no data is known)."""
    if bundle is None:
        size = tuple(cfg.size or (64, 64))
        return [torch.randn(min(cfg.samples, batch_size), 3, *size)]
    n = min(cfg.samples, len(bundle.val))
    images = [bundle.val[i][0] for i in range(n)]
    groups: dict[tuple, list] = {}
    for im in images:
        groups.setdefault(tuple(im.shape), []).append(im)
    return [torch.stack(g[i:i + batch_size]) for g in groups.values() for i in range(0, len(g), batch_size)]


def sidecar_meta(bundle, task: str, name: str, source: str) -> dict[str, Any]:
    """Preprocessing and labels a deployed predictor needs: mean/std, resize policy, class names."""
    if bundle is None:
        return {"model": name, "source": source, "samples": "random", "mean": [0.485, 0.456, 0.406],
                "std": [0.229, 0.224, 0.225], "resize": None, "center_crop": None, "class_names": None,
                "ignore_index": 255}
    info, c = bundle.info, bundle.config
    size = c.eval_size if c.eval_size is not None else c.size
    if size is None and task == "classification":
        size = info.native_size
    hw = [size, size] if isinstance(size, int) else (list(size) if size else None)
    resize, crop = hw, None
    if task == "classification" and hw and hw[0] >= 128:  # ClassificationPresetEval: shorter side, then centre crop
        resize, crop = int(hw[0] / 0.875), hw
    return {"model": name, "source": source, "samples": "real", "data": c.spec, "mean": list(info.mean),
            "std": list(info.std), "resize": resize, "center_crop": crop, "class_names": list(info.class_names),
            "palette": [list(c) for c in info.palette] if info.palette else None, "ignore_index": info.ignore_index}


def _check_ours(out: Path) -> None:
    """Refuse to replace an ONNX file slimcv did not write (one it wrote has its sidecar beside it)."""
    from slimcv.deploy.predictor import sidecar_path

    side = sidecar_path(out)
    ours = side.is_file() and {"model", "source", "mean", "std"} <= set(read_json(side) or {})
    if out.exists() and not ours:
        raise SlimcvError(f"{out} already exists and slimcv did not write it (no {side.name} beside it); choose "
                          "another -o or move it away.")


def write_sidecar(onnx_path: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``<name>.onnx.json`` beside the ONNX file: everything ``slimcv.deploy.load`` needs."""
    from slimcv.deploy.predictor import sidecar_path

    return atomic_write_json(sidecar_path(onnx_path), meta)


def _check_opset(opset: int) -> None:
    import onnx

    latest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= latest:
        raise SlimcvError(f"ONNX opset {opset} is not supported: choose {MIN_OPSET}..{latest} "
                          f"({MIN_OPSET} is the first with per-channel quantization; 17 is the default).")


def _guess_task(net: nn.Module) -> str:
    from slimcv.models.detection import DenseDetector, is_detector

    if isinstance(net, DenseDetector) or is_detector(net):
        return "detection"
    with torch.no_grad():
        out = net.eval()(torch.zeros(1, 3, 33, 33))
    return "segmentation" if out.ndim == 4 else "classification"


def _print(r: ExportResult) -> None:
    a = r.agreement
    # each row is its own quantity: formatted one by one, not to the decimals of the smallest in the column
    rows = [("file", str(r.path)), ("size MiB", f"{r.file_bytes / 2**20:.2f}"), ("opset", r.opset),
            ("exporter", r.exporter)]
    if a is not None:
        detector = r.meta.get("task") == "detection"
        rows += [(f"max |{'output' if detector else 'logit'} diff| ({a.samples} {a.source} samples)",
                  f"{a.max_abs_diff:.2g}"),
                 ("boxes kept by both %" if detector else "argmax agreement %", f"{100 * a.argmax_agreement:.1f}")]
    print_table("ONNX export", ["", "value"], rows)
