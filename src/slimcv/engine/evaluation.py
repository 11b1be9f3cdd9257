"""The ``eval`` stage: score a run folder, weights file or model on a dataset's validation split."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from slimcv._io import atomic_write_json
from slimcv.config import DataConfig
from slimcv.data import DataBundle, load_data
from slimcv.engine import distributed as D
from slimcv.engine.checkpoint import load_run_model
from slimcv.engine.loop import evaluate
from slimcv.engine.train import make_eval_loader, print_metrics
from slimcv.errors import SlimcvError
from slimcv.models import create_model


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    model_name: str
    out: Path | None


def load_model(source: str | nn.Module, num_classes: int | None = None, model: str | None = None,
               **kwargs: Any) -> tuple[nn.Module, str]:
    """A module from a run folder (model.json + weights), a weights file with ``model``, or a model name."""
    if isinstance(source, nn.Module):
        return source, type(source).__name__
    path = Path(source)
    if path.is_dir():
        net, spec = load_run_model(path)
        return net, spec["name"]
    if path.suffix in (".safetensors", ".pt", ".pth"):
        if path.parent.joinpath("model.json").is_file() and model is None:
            net, spec = load_run_model(path.parent)
            from slimcv.models import load_weights

            return load_weights(net, path), spec["name"]
        if model is None:
            raise SlimcvError(f"{path} holds only weights; also pass the architecture with --model NAME.")
        return create_model(model, num_classes, weights=path, **kwargs), model
    if path.suffix or "/" in str(source):
        raise SlimcvError(f"{source} is neither a run folder nor a weights file that exists; check the path.")
    return create_model(str(source), num_classes, **kwargs), str(source)


def evaluate_model(source: str | nn.Module, data: DataBundle | DataConfig | dict | str, *, model: str | None = None,
                   out: str | Path | None = None, device: str = "auto", batch_size: int | None = None,
                   quiet: bool = False) -> EvalResult:
    """Score a model on the validation split; prints a table and writes JSON when ``out`` is given."""
    bundle = data if isinstance(data, DataBundle) else load_data(data)
    net, name = load_model(source, bundle.num_classes, model)
    dev = D.pick_device(device)
    net.to(dev)
    bs = batch_size or bundle.config.eval_batch_size or bundle.config.batch_size
    loader = make_eval_loader(bundle.val, bs, bundle.config.workers, bundle.info.ignore_index)
    metrics = evaluate(net, loader, dev, task=bundle.task, num_classes=bundle.num_classes,
                       ignore_index=bundle.info.ignore_index, class_names=bundle.info.class_names)
    if out is not None:
        atomic_write_json(out, {"model": name, "data": bundle.config.spec, "metrics": metrics})
    if not quiet:
        print_metrics(f"{name} on {bundle.config.spec}", metrics, bundle.info.class_names)
    return EvalResult(metrics, name, Path(out) if out else None)
