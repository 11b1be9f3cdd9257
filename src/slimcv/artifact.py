"""What a saved model is, and the only code that reads and writes model folders.

A model folder (a run of ``train``/``distill``/``prune``, or one written by :func:`save_model`) holds::

    model.json        the architecture reference: {"name": registered name | "package.module:factory",
                      "num_classes", "kwargs", "task", "pruning_history", "input_shape", "class_names",
                      "palette", "preprocess": {"mean", "std"}}
    best.safetensors | model.safetensors   the weights (plain tensors, never pickled modules)
    config.json       the settings that trained it (train-like stages)
    summary.json      {"metrics": {...}} of its last evaluation

A model is rebuilt by calling its builder (a registered name, or a user's factory by import path), replaying the
pruning history with Torch-Pruning, then loading the weights: user-defined modules reload without pickling.

Sources a stage accepts (:func:`resolve_model`): an ``nn.Module``; a model folder; a registered name or
``package.module:factory`` with an optional local weights file; a weights file beside a ``model.json``.
ONNX files are resolved by the stages that can run them (:func:`is_onnx`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from slimcv._io import atomic_write_json
from slimcv.errors import SlimcvError
from slimcv.models.factory import is_factory
from slimcv.run_folder import (CONFIG_JSON, MODEL_JSON, MODEL_WEIGHTS, PRUNE_JSON, SUMMARY_JSON, WEIGHT_FILES,
                               read_json)


def metric_key(task: str) -> str:
    """The metric that ranks models of a task: mIoU for segmentation, mAP for detection, top-1 for classification."""
    return {"segmentation": "miou", "detection": "map"}.get(task, "top1")


WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def is_weights_file(source: Any) -> bool:
    """True for a path that names a weights file (it may not exist yet)."""
    return isinstance(source, (str, Path)) and Path(str(source)).suffix in WEIGHT_SUFFIXES


def is_model_folder(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / MODEL_JSON).is_file()


def is_onnx(source: Any) -> bool:
    return isinstance(source, (str, Path)) and str(source).endswith(".onnx")


def check_exists(source: str | Path, what: str = "model") -> Path:
    """The path, or one sentence saying it does not exist (before any other message about it)."""
    path = Path(source)
    if not path.exists():
        raise SlimcvError(f"{what.capitalize()} {path} does not exist; check the path.")
    return path


def read_model_spec(folder: str | Path) -> dict[str, Any]:
    """The architecture reference of a model folder."""
    folder = check_exists(folder, "model folder")
    spec = read_json(folder / MODEL_JSON)
    if spec is None:
        raise SlimcvError(f"{folder} has no {MODEL_JSON}, so slimcv cannot tell its architecture; pass the model "
                          "with --model NAME (or package.module:factory) and its weights file with --weights.")
    if not isinstance(spec, dict) or "name" not in spec or "num_classes" not in spec:
        raise SlimcvError(f"{folder / MODEL_JSON} lacks the model name or num_classes; restore it or train again.")
    return spec


def read_run_config(folder: str | Path) -> dict[str, Any] | None:
    """The settings a train-like stage saved in ``config.json``; None when the folder has none."""
    return read_json(Path(folder) / CONFIG_JSON)


# Data settings that belong to the machine a run was made on, not to the run: resolved where it runs now.
MACHINE_DATA_SETTINGS = ("workers",)


def run_data_config(folder: str | Path, spec: str | None = None) -> dict[str, Any] | None:
    """The data settings a model folder was trained or pruned with (None when it records none), less the machine's
    own (loader workers). ``spec`` moves the data: the location changes, the recorded size, batch size and
    augmentations stay (for the same kind of dataset; another kind starts from its defaults)."""
    cfg = read_run_config(folder) if Path(folder).is_dir() else None
    if cfg and isinstance(cfg.get("data"), dict):
        data = cfg["data"]
    else:
        prune = (read_json(Path(folder) / PRUNE_JSON) or {}) if Path(folder).is_dir() else {}
        data = (prune.get("config") or {}).get("data")
    if not isinstance(data, dict):
        return None if spec is None else {"spec": spec}
    data = {k: v for k, v in data.items() if k not in MACHINE_DATA_SETTINGS}
    if spec is None:
        return data
    if _dataset_kind(spec) != _dataset_kind(str(data.get("spec", ""))):
        return {"spec": spec}
    return {**data, "spec": spec}


def _dataset_kind(spec: str) -> str:
    """'camvid' for 'camvid:/data/camvid': what a spec reads, apart from where."""
    return spec.partition(":")[0]


def read_summary(folder: str | Path) -> dict[str, Any] | None:
    """``summary.json``: {"metrics": the last evaluation, "best": {...}, ...}, or None."""
    return read_json(Path(folder) / SUMMARY_JSON)


def write_run_config(folder: str | Path, config: dict[str, Any]) -> Path:
    """``config.json``: the settings a train-like stage ran with (what ``--resume`` compares)."""
    return atomic_write_json(Path(folder) / CONFIG_JSON, config)


def write_model_spec(folder: str | Path, spec: dict[str, Any]) -> Path:
    """``model.json``: the architecture reference :func:`load_run_model` rebuilds."""
    return atomic_write_json(Path(folder) / MODEL_JSON, spec)


def write_summary(folder: str | Path, summary: dict[str, Any]) -> Path:
    """``summary.json``: {"metrics": ..., ...} of the folder's model."""
    return atomic_write_json(Path(folder) / SUMMARY_JSON, summary)


def find_weights(folder: str | Path) -> Path:
    """The best weights of a model folder, else its last checkpoint's."""
    from slimcv.engine.checkpoint import last_checkpoint

    folder = check_exists(folder, "model folder")
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    last = last_checkpoint(folder)
    if last is None:
        raise SlimcvError(f"{folder} holds no weights (best.safetensors, model.safetensors or a checkpoint); "
                          "is it a slimcv model folder?")
    return last / MODEL_WEIGHTS


# Classes of the script or notebook being run that this process saved folders of: it can rebuild them by name.
_IN_HAND: dict[str, type] = {}


def is_script_class(name: str) -> bool:
    """True for a class defined in the script being run (``__main__``) or inside a function: no import reaches it."""
    return "<locals>" in name or name.startswith("__main__:")


def build_from_spec(spec: dict[str, Any], *, source: str | Path | None = None,
                    model_class: Any = None) -> nn.Module:
    """A freshly built (untrained) module of the architecture ``spec`` describes, pruning replayed.

    ``source`` is the file the spec was read from: code it names runs only when the user opted in.
    ``model_class`` (a class or factory in the caller's hands) builds it instead of the name in the spec."""
    from slimcv.models import create_model

    kwargs = dict(spec.get("kwargs", {}))
    model_class = model_class or _IN_HAND.get(spec["name"])
    if model_class is None and is_script_class(spec["name"]):
        cls = spec["name"].rpartition(".")[2].rpartition(":")[2]
        raise SlimcvError(f"{source or 'This model'} holds a {cls} defined in a script or notebook "
                          f"({spec['name']}), which no other program can import; reload it in Python with the class "
                          f"in hand: slimcv.load(folder, model={cls}).")
    if model_class is not None:
        model = _build_given(model_class, spec, kwargs)
    else:
        model = create_model(spec["name"], spec["num_classes"], from_file=source, **kwargs)
    if spec.get("pruning_history"):
        apply_pruning_history(model, spec["pruning_history"], tuple(spec["input_shape"]))
    return model


def apply_pruning_history(model: nn.Module, history: list, input_shape: tuple[int, ...]) -> nn.Module:
    """Replay a saved pruning history (Torch-Pruning's) on a freshly built model so pruned weights fit it."""
    import torch

    try:
        import torch_pruning as tp
    except ImportError as e:  # a declared dependency; this only guards broken installs
        raise SlimcvError("Pruned models need torch-pruning to rebuild: pip install torch-pruning.") from e
    from slimcv.models.detection import trace_options

    model.eval()
    with torch.enable_grad():  # traced as pruning traced it
        graph = tp.DependencyGraph().build_dependency(model, torch.zeros(input_shape), **trace_options(model))
    try:
        graph.load_pruning_history(history)
    except (KeyError, IndexError, AttributeError) as e:
        raise SlimcvError(f"The pruning history does not fit this architecture ({e}); "
                          "rebuild with the same model name and options it was pruned from.") from e
    return model


def _build_given(model_class: Any, spec: dict[str, Any], kwargs: dict[str, Any]) -> nn.Module:
    """The caller's own class or factory called with the folder's recorded arguments."""
    import inspect

    try:
        params = inspect.signature(model_class).parameters
    except (TypeError, ValueError):
        params = {}
    if spec.get("num_classes") is not None and "num_classes" not in kwargs and (
            "num_classes" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())):
        kwargs["num_classes"] = spec["num_classes"]
    name = getattr(model_class, "__qualname__", type(model_class).__name__)
    try:
        model = model_class(**kwargs)
    except TypeError as e:
        raise SlimcvError(f"Calling {name}({', '.join(kwargs)}) with the folder's recorded arguments failed ({e}); "
                          "pass the class the folder was saved from.") from e
    if not isinstance(model, nn.Module):
        raise SlimcvError(f"{name} returned a {type(model).__name__}, not a torch.nn.Module.")
    return model


def load_run_model(folder: str | Path, which: str = "best", *,
                   model_class: Any = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a folder describes (model.json) and load its best or last weights."""
    from slimcv.engine.checkpoint import last_checkpoint
    from slimcv.models import load_weights

    spec = read_model_spec(folder)
    model = build_from_spec(spec, source=Path(folder) / MODEL_JSON, model_class=model_class)
    if which == "last":
        last = last_checkpoint(folder)
        if last is None:
            raise SlimcvError(f"{folder} has no checkpoint yet.")
        weights = last / MODEL_WEIGHTS
    else:
        weights = find_weights(folder)
    load_weights(model, weights)
    return model, spec


def load(folder: str | Path, model: Any = None, *, trust_remote_code: bool = False,
         which: str = "best") -> nn.Module:
    """The trained model a slimcv model folder holds, pruning replayed and weights loaded.

    ``model`` is the class (or factory) the folder was saved from, for classes defined in a script or notebook;
    ``trust_remote_code=True`` lets the folder's model.json name the code that rebuilds it."""
    from slimcv.trust import trust_remote_code as trust, trusting

    with trust(trust_remote_code or trusting()):
        net, spec = load_run_model(folder, which, model_class=model)
    return tag(net, spec)


@dataclass
class Loaded:
    """A model ready for a stage: the module, its architecture reference and where it came from."""

    model: nn.Module
    spec: dict[str, Any]
    folder: Path | None = None  # the model folder it was read from, if any
    weights: Path | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])


def resolve_model(source: Any, *, weights: str | Path | None = None, num_classes: int | None = None,
                  task: str | None = None, kwargs: dict[str, Any] | None = None) -> Loaded:
    """Any model source a stage takes (module, folder, name or factory with weights, weights file) as a module."""
    from slimcv.models import create_model, load_weights

    kwargs = dict(kwargs or {})
    if isinstance(source, nn.Module):
        from slimcv.models.tv import plain_logits

        if weights is not None:
            load_weights(source, weights)
        source = plain_logits(source)  # a dict (torchvision segmentation) or tuple output: its logits
        return Loaded(source, module_spec(source, num_classes, task, kwargs))
    if not isinstance(source, (str, Path)):
        raise SlimcvError(f"A model is an nn.Module, a model folder, a model name or a weights file, not a "
                          f"{type(source).__name__}.")
    text = str(source)
    path = Path(text)
    if is_onnx(text):
        raise SlimcvError(f"{path} is an ONNX file; this step needs the PyTorch model (its folder, or --model NAME "
                          "--weights FILE).")
    if path.is_dir():
        model, spec = load_run_model(path)
        if weights is not None:
            load_weights(model, weights)
        return Loaded(model, spec, folder=path, weights=Path(weights) if weights else find_weights(path))
    if is_weights_file(path):
        check_exists(path, "weights file")
        if (path.parent / MODEL_JSON).is_file():
            model, spec = load_run_model(path.parent)
            return Loaded(load_weights(model, path), spec, folder=path.parent, weights=path)
        raise SlimcvError(f"{path} holds only weights; also give the architecture: --model NAME (or "
                          "package.module:factory) with --weights FILE.")
    if (path.suffix or "/" in text) and not is_factory(text):
        raise SlimcvError(f"{text} does not exist; give a model folder, a weights file, a model name (see "
                          "`slimcv models`) or package.module:factory.")
    if num_classes is None:
        raise SlimcvError(f"Building model {text!r} needs the number of classes: give data (--data) or "
                          "num_classes.")
    model = create_model(text, num_classes, weights=weights, **kwargs)
    from slimcv.models import model_task

    spec = {"name": text, "num_classes": num_classes, "kwargs": kwargs,
            "task": task or (model_task(text) if not is_factory(text) else guess_task(model))}
    return Loaded(model, spec, weights=Path(weights) if weights else None)


def module_spec(model: nn.Module, num_classes: int | None, task: str | None,
                kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The architecture reference of a user's module: a registered name when slimcv built it, else its class."""
    known = getattr(model, "_slimcv_spec", None)
    if known:
        return dict(known)
    from slimcv.models import model_task
    from slimcv.models.tv import registered_name

    found = registered_name(model, num_classes) if not kwargs else None
    if found is not None:  # a torchvision network: saved under its registered name, so it rebuilds anywhere
        name, options = found
        return {"name": name, "num_classes": num_classes, "kwargs": options, "task": task or model_task(name)}
    cls = type(model)
    return {"name": f"{cls.__module__}:{cls.__qualname__}", "num_classes": num_classes, "kwargs": dict(kwargs or {}),
            "task": task or guess_task(model)}


def check_rebuildable(model: nn.Module, spec: dict[str, Any]) -> None:
    """Fail early, in one sentence, when ``spec`` would not rebuild ``model`` (so its folder could not reload)."""
    name = spec["name"]
    in_hand = None
    if is_script_class(name):
        in_hand = _IN_HAND[name] = type(model)
        cls = type(model).__name__
        warnings.warn(f"{cls} is defined {'inside a function' if '<locals>' in name else 'in the script being run'}, "
                      f"so its saved folder records the weights and pruning history but cannot name importable "
                      f"code; reload it with the class in hand: slimcv.load(folder, model={cls}) (or define {cls} "
                      "in an importable module).", stacklevel=3)
    try:
        fresh = build_from_spec({**spec, "pruning_history": []}, model_class=in_hand)
    except SlimcvError as e:
        raise SlimcvError(f"Cannot save this {type(model).__name__} so that it reloads: {e}") from e
    ours = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if not spec.get("pruning_history") and ours != theirs:
        diff = sorted(set(ours.items()) ^ set(theirs.items()))[:2]
        raise SlimcvError(f"{name}({', '.join(f'{k}={v!r}' for k, v in spec.get('kwargs', {}).items())}) builds a "
                          f"different network than the one given (e.g. {diff}); pass the constructor's arguments "
                          "as model_kwargs so a saved copy rebuilds the same architecture.")


def save_model(model: nn.Module, folder: str | Path, spec: dict[str, Any], *,
               metrics: dict[str, Any] | None = None, weights_name: str = MODEL_WEIGHTS) -> Path:
    """Write a model folder (model.json + safetensors weights [+ summary.json]) that :func:`load_run_model` reads."""
    from slimcv.models import save_weights

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_model_spec(folder, spec)
    save_weights(model, folder / weights_name)
    if metrics is not None:
        write_summary(folder, {"metrics": metrics})
    return folder


def guess_task(model: nn.Module) -> str:
    """'segmentation' when the model maps an image to an image of logits, else 'classification'."""
    import torch

    was = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, 3, 64, 64))
    except Exception as e:  # a user's forward: any failure here is theirs to see, in one sentence
        raise SlimcvError(f"Cannot run {type(model).__name__} on a 1x3x64x64 image to tell its task ({e}); pass "
                          "task='classification' or 'segmentation'.") from e
    finally:
        model.train(was)
    out = out.get("out", next(iter(out.values()))) if isinstance(out, dict) else out
    return "segmentation" if getattr(out, "ndim", 2) == 4 else "classification"


def stage_config(cls: type, source: Any, options: dict[str, Any], what: str, *, model_field: str | None = None,
                 defaults: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """The one front door of every stage: ``source`` is the stage's config (a ``cls`` or its dict), or the model
    itself (a module, a folder, a name) with ``options`` as the config's fields. Returns (config, model source):
    the model source is None when the config names it. ``model_field`` is the field that records a model given
    by path or name (train and distill: "model"; prune and quantize: "source", also for objects, by label);
    ``defaults`` apply to calls with the model itself (e.g. out_dir None: nothing is written unless asked)."""
    from slimcv.config import build_config

    if isinstance(source, (cls, dict)):
        values = source if not options else {**(source.model_dump() if isinstance(source, cls) else source),
                                             **options}
        return build_config(cls, values, f"{what} config"), None
    values = {**(defaults or {}), **options}
    if model_field == "source":
        values["source"] = source_label(source)
    elif model_field is not None and isinstance(source, (str, Path)):
        values[model_field] = str(source)
    return build_config(cls, values, f"{what} options"), source


def load_inputs(source: Any, data: Any = None, *, weights: str | Path | None = None,
                kwargs: dict[str, Any] | None = None):
    """The model and the data of a stage, from any model source and any data form (see :func:`resolve_model`
    and ``slimcv.data.as_bundle``); a model folder's own data settings are the default."""
    from slimcv.data import as_bundle

    if isinstance(source, (str, Path)) and not is_factory(str(source)) and (
            Path(source).suffix or "/" in str(source)) and not Path(source).exists():
        raise SlimcvError(f"{source} does not exist; give a model folder, a weights file with --model, a model "
                          "name (see `slimcv models`) or package.module:factory.")
    if isinstance(data, str) and isinstance(source, (str, Path)) and Path(source).is_dir():
        data = run_data_config(source, data)  # the data moved: its recorded size, batch and augmentations stay
    if data is None and isinstance(source, (str, Path)) and Path(source).is_dir():
        check_exists(source, "model folder")
        data = run_data_config(source)
        if data is None:
            raise SlimcvError(f"{source} records no data settings; give the data (--data SPEC).")
    if data is None:
        raise SlimcvError("Give the data (--data SPEC, or data=(train_dataset, val_dataset)): slimcv measures "
                          "what every step costs in accuracy.")
    if isinstance(source, nn.Module):
        bundle = as_bundle(data, model=source)
        loaded = resolve_model(source, weights=weights, num_classes=bundle.num_classes, task=bundle.task,
                               kwargs=kwargs)
    elif isinstance(source, (str, Path)) and (Path(source).is_dir() or is_weights_file(source)):
        loaded = resolve_model(source, weights=weights, kwargs=kwargs)
        bundle = as_bundle(data, model=loaded.model)
    else:
        bundle = as_bundle(data)
        loaded = resolve_model(source, weights=weights, num_classes=bundle.num_classes, task=bundle.task,
                               kwargs=kwargs)
    check_classes(loaded.model, bundle)
    if loaded.spec.get("num_classes") is None:
        loaded.spec["num_classes"] = bundle.num_classes
    loaded.spec.setdefault("task", bundle.task)
    loaded.spec.setdefault("class_names", list(bundle.info.class_names))
    if bundle.info.palette:
        loaded.spec.setdefault("palette", [list(c) for c in bundle.info.palette])
    loaded.spec.setdefault("preprocess", {"mean": list(bundle.info.mean), "std": list(bundle.info.std)})
    loaded.spec.setdefault("input_shape", data_input_shape(bundle))
    return loaded, bundle


def data_input_shape(bundle: Any) -> list[int]:
    """(1, C, H, W) a model of this data runs at when deployed: the data's eval/training size, else its first
    validation image's."""
    c = bundle.val[0][0].shape[0]
    size = bundle.config.eval_size or bundle.config.size
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        return [1, int(c), int(h), int(w)]
    return [1, *(int(d) for d in bundle.val[0][0].shape)]


def check_classes(model: nn.Module, bundle: Any) -> None:
    """One sentence when the model predicts a different number of classes than the data has."""
    import torch

    was = model.training
    try:
        with torch.no_grad():
            out = model.eval()(bundle.val[0][0][None])
    except Exception as e:  # the user's forward on the user's data: say so in one sentence
        raise SlimcvError(f"{type(model).__name__} cannot run on the data's first validation image "
                          f"{tuple(bundle.val[0][0].shape)} ({str(e).splitlines()[0][:200]}); check the input size "
                          "and channels the model expects.") from e
    finally:
        model.train(was)
    if bundle.task == "detection":
        return _check_detector_classes(model, bundle)
    out = out.get("out", next(iter(out.values()))) if isinstance(out, dict) else out
    if out.ndim >= 2 and out.shape[1] != bundle.num_classes:
        raise SlimcvError(f"The model predicts {out.shape[1]} classes but the data has {bundle.num_classes} "
                          f"({bundle.config.spec}); build it with num_classes={bundle.num_classes} or use the data it "
                          "was trained on.")


def _check_detector_classes(model: nn.Module, bundle: Any) -> None:
    head = getattr(getattr(model, "head", None), "classification_head", None)
    n = getattr(head, "num_classes", None)
    if n is not None and n - 1 != bundle.num_classes:  # a torchvision head counts the background too
        raise SlimcvError(f"The detector predicts {n - 1} classes but the data has {bundle.num_classes} "
                          f"({bundle.config.spec}); build it with num_classes={bundle.num_classes} or use the data "
                          "it was trained on.")


def tag(model: nn.Module, spec: dict[str, Any]) -> nn.Module:
    """Remember on the module how to rebuild it, so a later stage given the object saves it rebuildably."""
    object.__setattr__(model, "_slimcv_spec", dict(spec))
    return model


def source_label(source: Any) -> str:
    """How a model source is written in configs and reports: its path or name, or the module's class."""
    if isinstance(source, nn.Module):
        spec = getattr(source, "_slimcv_spec", None)
        return f"<{spec['name'] if spec else type(source).__name__}>"
    return str(source)


def result_folder(result: Any) -> Path:
    """The folder a stage's result object (train, distill, prune, quantize) was saved in."""
    folder = getattr(result, "out_dir", None) or getattr(result, "run_dir", None)
    if folder is None:
        raise SlimcvError(f"This {type(result).__name__} was not saved (no out_dir); run the stage with out_dir=... "
                          "to measure or report it.")
    return Path(folder)
