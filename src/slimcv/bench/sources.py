"""What `slimcv bench` can measure: run folders, quantize folders, registered model names, .onnx files, modules."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from slimcv.bench.macs import count_macs, count_params
from slimcv.bench.size import file_bytes, onnx_summary, state_dict_bytes
from slimcv.artifact import is_model_folder, read_json, read_run_config, result_folder
from slimcv.errors import SlimcvError
from slimcv import run_folder
from slimcv.run_folder import COMPARISON_JSON, PRUNE_JSON, QUANTIZE_JSON


@dataclass
class Source:
    """One model to measure: a PyTorch module (eager, and ORT through an export) or an ONNX file (ORT)."""

    name: str
    source: str
    kind: str  # "run", "name", "module" (PyTorch) or "onnx"
    input_shape: tuple[int, ...]  # one sample, no batch: (C, H, W)
    task: str | None = None
    model: nn.Module | None = field(default=None, repr=False)
    onnx: Path | None = None
    precision: str = "fp32"
    params: int | None = None
    macs: int | None = None
    file_bytes: int | None = None
    batch_dim: int | None = None  # fixed batch size of an ONNX file, None when dynamic
    load: dict[str, Any] = field(default_factory=dict)  # how a fresh process rebuilds it (memory probe)


def resolve_sources(sources: list[Any], input_size: tuple[int, int] | None = None,
                    num_classes: int | None = None) -> list[Source]:
    """Turn each source into one or more candidates (a quantize folder gives one per ONNX file); names made unique."""
    if not sources:
        raise SlimcvError("Nothing to measure: give at least one run folder, model name or .onnx file.")
    out: list[Source] = []
    for src in sources:
        out.extend(_resolve(src, input_size, num_classes))
    seen: dict[str, int] = {}
    for c in out:
        if c.name in seen:
            seen[c.name] += 1
            c.name = f"{c.name}#{seen[c.name]}"
        else:
            seen[c.name] = 1
    return out


def _resolve(src: Any, input_size, num_classes) -> list[Source]:
    if isinstance(src, tuple) and len(src) == 2 and all(isinstance(v, (str, Path)) for v in src):
        from slimcv.artifact import resolve_model

        name, weights = src  # (architecture, local weights file)
        src = resolve_model(str(name), weights=weights, num_classes=num_classes or _default_classes(str(name))).model
    if hasattr(src, "out_dir") or hasattr(src, "run_dir"):  # a stage's result: its saved folder
        src = result_folder(src)
    if isinstance(src, nn.Module):
        if input_size is None:
            raise SlimcvError(f"Measuring an in-memory {type(src).__name__} needs input_size=(H, W).")
        spec = getattr(src, "_slimcv_spec", None) or {}
        return [_torch_candidate(spec.get("name") or type(src).__name__, "<module>", "module", src, (3, *input_size),
                                 spec.get("task"), None, {})]
    path = Path(str(src))
    if run_folder.kind(path) == "quantize":
        return _quantize_folder(path, input_size)
    if path.is_dir() or (path.suffix == ".safetensors" and is_model_folder(path.parent)):
        return [_run_folder(path if path.is_dir() else path.parent, input_size)]
    if path.suffix == ".onnx":
        if not path.is_file():
            raise SlimcvError(f"ONNX file {path} does not exist; check the path or export it with `slimcv export`.")
        return [_onnx(path, path.stem, input_size)]
    if path.suffix or "/" in str(src):
        raise SlimcvError(f"{src} is neither a run folder nor an .onnx file that exists; check the path.")
    return [_by_name(str(src), input_size, num_classes)]


def _default_classes(name: str) -> int:
    from slimcv.models import MODELS

    if name in MODELS:
        default = inspect.signature(MODELS.get(name)).parameters.get("num_classes")
        if default is not None and isinstance(default.default, int):
            return default.default
    return 10


def _torch_candidate(name: str, source: str, kind: str, model: nn.Module, shape: tuple[int, ...], task, weights,
                     load: dict[str, Any]) -> Source:
    size = file_bytes(weights) if weights is not None else state_dict_bytes(model)
    model = as_network(model, shape)
    return Source(name=name, source=source, kind=kind, input_shape=tuple(shape), task=task, model=model,
                     params=count_params(model), macs=count_macs(model, (1, *shape)), file_bytes=size, load=load)


def as_network(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """What is timed of a model: itself, or a detector's network as deployed (boxes and scores per anchor; box
    selection is timed on its own)."""
    from slimcv.models.detection import DenseDetector, is_detector

    if is_detector(model) and not isinstance(model, DenseDetector):
        return DenseDetector(model.eval(), shape[-2:])
    return model


def _run_folder(path: Path, input_size) -> Source:
    from slimcv.artifact import find_weights, load_run_model

    model, spec = load_run_model(path)
    shape = (3, *input_size) if input_size else run_input_shape(path, spec)
    return _torch_candidate(path.name, str(path), "run", model, shape, spec.get("task"), find_weights(path),
                            {"source": str(path)})


def run_input_shape(path: Path, spec: dict[str, Any]) -> tuple[int, ...]:
    """The (C, H, W) a run folder's model was evaluated at: its model.json, config.json, comparison.json or data."""
    if spec.get("input_shape"):
        return tuple(spec["input_shape"][1:])
    cfg = read_run_config(path) or {}
    data = cfg.get("data") or (read_json(path / PRUNE_JSON) or {}).get("config", {}).get("data") or {}
    size = data.get("eval_size") or data.get("size")
    if size is not None:
        return (3, *(size if isinstance(size, (list, tuple)) else (size, size)))
    rows = read_json(path / COMPARISON_JSON)
    if rows and rows[-1].get("input"):
        return tuple(rows[-1]["input"])
    if data.get("spec"):
        try:
            from slimcv.data import build_dataset

            ds = build_dataset(data["spec"], data.get("val_split", "val"), **data.get("options", {}))
            native = ds.info.native_size
            if native:
                return (3, *native)
        except SlimcvError:
            pass
    raise SlimcvError(f"Cannot tell the input size of {path}: pass --input-size H W.")


def _by_name(name: str, input_size, num_classes) -> Source:
    from slimcv.models import create_model, model_task

    task = model_task(name)
    if input_size is None:
        raise SlimcvError(f"Model name {name!r} carries no input size: pass --input-size H W (e.g. 224 224).")
    num_classes = num_classes or _default_classes(name)
    model = create_model(name, num_classes)
    return _torch_candidate(name, name, "name", model, (3, *input_size), task, None,
                            {"source": name, "num_classes": num_classes})


def _onnx(path: Path, name: str, input_size, params: int | None = None, macs: int | None = None,
          task: str | None = None) -> Source:
    from slimcv.deploy.runtimes import check_image_model

    check_image_model(path)  # one NCHW RGB input, or one sentence
    info = onnx_summary(path)
    dims = info["input_shape"]
    if len(dims) != 4:
        raise SlimcvError(f"{path} takes a {len(dims)}-D input; slimcv bench measures image models (N, C, H, W).")
    from slimcv.deploy.predictor import find_sidecar

    side = find_sidecar(path)
    sidecar = (read_json(side) or {}) if side else {}
    hw = tuple(input_size) if input_size else tuple(dims[2:])
    if None in hw:
        hw = _sidecar_size(sidecar)
    if hw is None or None in hw:
        raise SlimcvError(f"{path} has a dynamic image size: pass --input-size H W.")
    return Source(name=name, source=str(path), kind="onnx", input_shape=(dims[1] or 3, *hw),
                     task=task or sidecar.get("task"), onnx=path, precision=info["precision"],
                     params=params if params is not None else info["params"], macs=macs, file_bytes=file_bytes(path),
                     batch_dim=dims[0], load={"source": str(path)})


def _sidecar_size(sidecar: dict[str, Any]) -> tuple[int, int] | None:
    """The size an exported model is fed, from its sidecar: the crop, the resize, or its source run's size."""
    for key in ("center_crop", "resize"):
        if sidecar.get(key):
            v = sidecar[key]
            return (v, v) if isinstance(v, int) else tuple(v)
    source = Path(str(sidecar.get("source", "")))
    if is_model_folder(source):
        from slimcv.artifact import read_model_spec

        try:
            return tuple(run_input_shape(source, read_model_spec(source))[1:])
        except SlimcvError:
            return None
    return None


def _quantize_folder(path: Path, input_size) -> list[Source]:
    """One ONNX candidate per model of quantize.json; params and MACs from the source run when it loads."""
    info = read_json(path / QUANTIZE_JSON)
    models = info.get("models") if isinstance(info, dict) else None
    if not models:
        raise SlimcvError(f"{path / QUANTIZE_JSON} lists no models; run `slimcv quantize` again.")
    params = macs = None
    source = Path(str(info.get("source", "")))
    if is_model_folder(source):
        c = _run_folder(source, input_size)
        params, macs, input_size = c.params, c.macs, input_size or c.input_shape[1:]
    out: list[Source] = []
    irs = []
    seen = set()
    for m in models:
        onnx_path = path / m["path"] if not Path(m["path"]).is_absolute() else Path(m["path"])
        if onnx_path in seen:  # one file listed once per runtime that ran it: bench times each runtime itself
            continue
        seen.add(onnx_path)
        if onnx_path.suffix == ".onnx" and onnx_path.is_file():
            out.append(_onnx(onnx_path, f"{path.name}:{m['name']}", input_size, params, macs, info.get("task")))
        elif onnx_path.suffix == ".xml" and onnx_path.is_file():
            irs.append((onnx_path, f"{path.name}:{m['name']}"))
    if irs and out:  # an OpenVINO IR (NNCF INT8) takes what the FP32 file takes
        import dataclasses

        out += [dataclasses.replace(out[0], name=name, source=str(ir), onnx=ir, precision="int8",
                                    file_bytes=file_bytes(ir), load={"source": str(ir)}) for ir, name in irs]
    if not out:
        raise SlimcvError(f"None of the ONNX files listed in {path / QUANTIZE_JSON} exist; "
                          "run `slimcv quantize` again.")
    return out
