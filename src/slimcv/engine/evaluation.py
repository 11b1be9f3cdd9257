"""The ``eval`` stage: score a run folder, weights file or model on a dataset's validation split."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from slimcv._io import atomic_write_json
from slimcv.data import as_bundle
from slimcv.engine import distributed as D
from slimcv.artifact import check_exists, is_onnx, is_weights_file, load_inputs, resolve_model
from slimcv.engine.loop import evaluate
from slimcv.engine.train import make_eval_loader, print_metrics
from slimcv.deploy.runtimes import ORT
from slimcv.errors import SlimcvError


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    model_name: str
    out: Path | None
    model: nn.Module | None = None


def load_model(source: Any, num_classes: int | None = None, model: str | None = None,
               weights: str | Path | None = None, **kwargs: Any) -> tuple[nn.Module, str]:
    """A module from a module, run folder, weights file (with ``model``) or model name (see artifact.resolve_model)."""
    source, weights = _architecture_first(source, model, weights)
    loaded = resolve_model(source, weights=weights, num_classes=num_classes, kwargs=kwargs)
    return loaded.model, loaded.name


def _architecture_first(source: Any, model: str | None, weights: Any) -> tuple[Any, Any]:
    """``eval weights.safetensors --model NAME``: the architecture is the source, the file its weights."""
    if model is not None and is_weights_file(source):
        return model, source
    return source, weights


def evaluate_model(source: Any, data: Any = None, *, model: str | None = None, weights: str | Path | None = None,
                   out: str | Path | None = None, device: str = "auto", batch_size: int | None = None,
                   runtime: str = ORT, quiet: bool = False) -> EvalResult:
    """Score a model (module, folder, name + weights, or an .onnx file run in ``runtime``) on the validation split;
    ``data`` is a spec, a DataConfig, a (train, val) pair of Datasets or DataLoaders, or None for a folder's own."""
    if is_onnx(source):
        from slimcv.deploy.deployed import DeployedModule

        net = DeployedModule(check_exists(source, "ONNX file"), runtime)
        if data is None:
            raise SlimcvError(f"Give the data to evaluate {source} on (a dataset spec, or (train, val) datasets).")
        bundle, name, device = as_bundle(data, model=net), Path(source).name, "cpu"
    else:
        source, weights = _architecture_first(source, model, weights)
        loaded, bundle = load_inputs(source, data, weights=weights)
        net, name = loaded.model, loaded.name
    dev = D.pick_device(device)
    net.to(dev)
    bs = batch_size or bundle.config.eval_batch_size or bundle.config.batch_size
    loader = make_eval_loader(bundle.val, bs, bundle.config.loader_workers(), bundle.info.ignore_index)
    metrics = evaluate(net, loader, dev, task=bundle.task, num_classes=bundle.num_classes,
                       ignore_index=bundle.info.ignore_index, class_names=bundle.info.class_names)
    if out is not None:
        atomic_write_json(out, {"model": name, "data": bundle.config.spec, "metrics": metrics})
    if not quiet:
        print_metrics(f"{name} on {bundle.config.spec}", metrics, bundle.info.class_names)
    return EvalResult(metrics, name, Path(out) if out else None, net)
