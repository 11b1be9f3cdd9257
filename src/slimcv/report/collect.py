"""Read run folders (train, distill, prune, quantize) into uniform report entries; missing values stay None.

What each folder may hold (everything optional except what identifies the stage):

* train / distill: ``config.json`` (TrainConfig, distill adds ``teacher``), ``model.json``, weights,
  ``summary.json`` {"metrics": evaluate() dict}, ``metrics.jsonl`` (one record per epoch), ``comparison.json``.
* prune: ``prune.json`` {"before", "after", "steps", "config"} + ``model.json`` + weights, and, when the stage
  writes them, ``config.json`` / ``summary.json`` / ``metrics.jsonl`` (or ``step_*/metrics.jsonl``).
* quantize: ``quantize.json`` {"stage": "quantize", "task", "source", "data", "models": [{"name", "path",
  "precision", "runtime", "metrics", "file_bytes", "latency_ms": {"median", "p90"}, "threads"}], ...}:
  one entry per model.
* a ``bench.json`` written by `slimcv bench` adds measured latencies to the entries whose source it measured.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimcv._io import read_jsonl
from slimcv.artifact import MODEL_JSON, is_model_folder, read_json, read_run_config, read_summary, result_folder
from slimcv.errors import SlimcvError
from slimcv import run_folder
from slimcv.run_folder import BEST_WEIGHTS, COMPRESS_JSON, CONFIG_JSON, METRICS_JSONL, PRUNE_JSON, QUANTIZE_JSON
from slimcv.deploy import runtimes

METRIC_KEYS = ("miou", "map", "top1")


@dataclass
class Entry:
    """One model in the report: what it scores, what it costs, how it was made."""

    name: str
    kind: str  # train, distill, prune, quantize
    path: Path
    task: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    params: int | None = None
    macs: int | None = None
    file_bytes: int | None = None
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)  # runtime -> {"median", "p90", "threads", "from"}
    curves: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] | None = None
    command: str | None = None
    command_recorded: bool = False  # False: rebuilt from the saved config, not the command line that ran
    data: dict[str, Any] | None = None  # DataConfig as a dict
    model_path: Path | None = None  # a run folder (PyTorch) or an .onnx file: what predictions load
    input_shape: tuple[int, ...] | None = None
    notes: list[str] = field(default_factory=list)
    how: str | None = None  # quantize rows: which file runs in which runtime ("INT8 file in OpenVINO")

    @property
    def metric_name(self) -> str | None:
        """'miou', 'map' or 'top1', whichever this entry's metrics hold (by task first)."""
        preferred = {"segmentation": "miou", "detection": "map", "classification": "top1"}.get(self.task or "")
        if preferred and preferred in self.metrics:
            return preferred
        return next((k for k in METRIC_KEYS if k in self.metrics), preferred)

    @property
    def metric(self) -> float | None:
        value = self.metrics.get(self.metric_name or "")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def per_class(self) -> dict[str, float | None]:
        return (self.metrics.get("per_class_iou") or self.metrics.get("per_class_ap") or
                self.metrics.get("per_class_acc") or {})

    @property
    def best_latency(self) -> tuple[str, float] | None:
        """(runtime, median ms) of the fastest runtime measured for this entry."""
        timed = [(rt, v["median"]) for rt, v in self.latency.items() if v.get("median") is not None]
        return min(timed, key=lambda t: t[1]) if timed else None


def collect(paths: list[str | Path], *, count: bool = True) -> list[Entry]:
    """One or more entries per folder, in the order given; ``count`` loads PyTorch models to count params/MACs."""
    if not paths:
        raise SlimcvError("Give at least one run folder to report on.")
    entries: list[Entry] = []
    for p in paths:
        if hasattr(p, "out_dir") or hasattr(p, "run_dir"):  # a stage's result object: its saved folder
            p = result_folder(p)
        path = Path(p)
        if not path.is_dir():
            raise SlimcvError(f"{path} is not a folder; give run folders written by train, distill, prune or quantize.")
        what = run_folder.kind(path)
        if what == "quantize":
            entries.extend(_quantize(path, count))
        elif what == "prune":
            entries.append(_prune(path, count))
        elif what == "model":
            entries.append(_train(path, count))
        elif what == "compress":
            entries.extend(_compressed(path, count))
        else:
            raise SlimcvError(f"{path} holds no config.json, prune.json or quantize.json; is it a slimcv run folder?")
    if not entries:
        raise SlimcvError(f"Nothing to report: the compress search in {', '.join(map(str, paths))} chose no model; "
                          "add the source's folder to compare with, or give the search more time.")
    _unique_names(entries)
    return entries


def add_bench(entries: list[Entry], bench_json: str | Path) -> int:
    """Fill latencies from a `slimcv bench` JSON for entries whose folder or file it measured; returns how many."""
    data = read_json(Path(bench_json))
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith("slimcv.bench/"):
        raise SlimcvError(f"{bench_json} is not a `slimcv bench` JSON file (no 'schema': 'slimcv.bench/1').")
    threads = data.get("settings", {}).get("threads")
    by_source = {source_key(m["source"]): m for m in data.get("models", [])}
    filled = 0
    for e in entries:
        m = by_source.get(source_key(e.model_path)) if e.model_path else None
        if m is None:
            continue
        for r in m["runtimes"]:
            e.latency[r["runtime"]] = {"median": r["latency_ms"]["median"], "p90": r["latency_ms"]["p90"],
                                       "threads": threads, "from": str(bench_json)}
        e.params = e.params if e.params is not None else m.get("params")
        e.macs = e.macs if e.macs is not None else m.get("macs")
        filled += 1
    return filled


def source_key(path: Any) -> str:
    """A path made comparable across relative and absolute spellings."""
    return str(Path(str(path)).resolve())


def _train(path: Path, count: bool) -> Entry:
    cfg = read_run_config(path)
    spec = read_json(path / MODEL_JSON) or {}
    kind = "distill" if isinstance(cfg, dict) and "teacher" in cfg else "train"
    curves = read_jsonl(path / METRICS_JSONL)
    e = Entry(name=path.name, kind=kind, path=path, task=spec.get("task"), config=cfg, curves=curves,
              data=(cfg or {}).get("data"), model_path=path if spec else None)
    e.metrics = _summary_metrics(path, curves)
    if cfg:
        e.command = _recorded_command(path, cfg)
        e.command_recorded = e.command is not None
        # a fresh out_dir: the rebuilt command must not write into (or --resume) the folder it reproduces
        e.command = e.command or f"slimcv {kind} --config {path / CONFIG_JSON} --out-dir {path}_again"
    _weights_and_counts(e, count)
    return e


def _prune(path: Path, count: bool) -> Entry:
    info = read_json(path / PRUNE_JSON) or {}
    after = info.get("after") or {}
    pcfg = info.get("config") or {}
    spec = read_json(path / MODEL_JSON) or {}
    curves = read_jsonl(path / METRICS_JSONL) or _step_curves(path)
    e = Entry(name=path.name, kind="prune", path=path, task=spec.get("task"), curves=curves,
              config=read_run_config(path) or pcfg, data=pcfg.get("data"),
              model_path=path if spec else None)
    e.metrics = _summary_metrics(path, curves) or {k: after[k] for k in METRIC_KEYS if k in after}
    e.params, e.macs, e.file_bytes = after.get("params"), after.get("macs"), None
    if isinstance(after.get("latency_ms"), (int, float)):
        e.latency[runtimes.EAGER] = {"median": after["latency_ms"], "p90": None, "threads": after.get("latency_threads"),
                              "from": f"{path / PRUNE_JSON} (prune stage)"}
    e.command = _recorded_command(path, info)
    e.command_recorded = e.command is not None
    e.command = e.command or _prune_command(pcfg)
    _weights_and_counts(e, count)
    return e


def _quantize(path: Path, count: bool) -> list[Entry]:
    info = read_json(path / QUANTIZE_JSON) or {}
    models = info.get("models") or []
    if not models:
        raise SlimcvError(f"{path / QUANTIZE_JSON} lists no models; run `slimcv quantize` again.")
    source = Path(str(info.get("source", "")))
    counts: dict[str, Any] = {}
    if count and is_model_folder(source):
        counts = _count_run(source)
    command = _recorded_command(path, info)
    out = []
    for m in models:
        model = _listed_path(path, str(m.get("path", "")))
        loadable = (model.suffix in (".onnx", ".xml") and model.is_file()) or is_model_folder(model)
        e = Entry(name=f"{path.name}:{m['name']}", kind="quantize", path=path, task=info.get("task"),
                  metrics=dict(m.get("metrics") or {}), file_bytes=m.get("file_bytes"), config=info.get("config"),
                  data=info.get("data"), model_path=model if loadable else None, command=command,
                  params=counts.get("params"), macs=counts.get("macs"), input_shape=counts.get("input_shape"),
                  command_recorded=command is not None)
        e.how = _how(m)
        lat = m.get("latency_ms") or {}
        if lat.get("median") is not None:
            e.latency[_runtime_name(m)] = {"median": lat["median"], "p90": lat.get("p90"), "threads": m.get("threads"),
                                           "from": str(path / QUANTIZE_JSON)}
        if e.file_bytes is None and e.model_path is not None and e.model_path.is_file():
            from slimcv.bench.size import file_bytes

            e.file_bytes = file_bytes(e.model_path)
        if not e.metrics:
            e.notes.append("quantize.json holds no metrics for this model")
        out.append(e)
    return out


RUNTIME_WORDS = {name: rt.title for name, rt in runtimes.TABLE.items()}


def _compressed(path: Path, count: bool) -> list[Entry]:
    """A compress search's folder: the model it chose (as deployed), named after the search's folder."""
    o = (read_json(path / COMPRESS_JSON) or {}).get("outcome") or {}
    inside, listed = o.get("folder_in_out_dir"), o.get("folder")
    chosen = path / inside if inside else Path(str(listed or ""))
    if not (inside or listed) or not chosen.is_dir():
        return []  # nothing met the latency budget: the report states the search's outcome, with no row for it
    c = o.get("chosen") or {}
    what = run_folder.kind(chosen)
    if what == "quantize":
        rows = _quantize(chosen, count)
        entries = [e for e in rows if c and _runtime_name(c) in e.latency] or rows
    else:
        entries = [_prune(chosen, count) if what == "prune" else _train(chosen, count)]
    for e in entries:
        e.name = path.name if len(entries) == 1 else f"{path.name}:{e.name}"
        e.notes.append(f"chosen by the compress search in {path}")
    return entries


def _how(m: dict[str, Any]) -> str:
    """fp32 vs fp32_pytorch and friends, in words: which file, in which runtime."""
    runtime = RUNTIME_WORDS.get(str(m.get("runtime")), str(m.get("runtime")))
    precision = str(m.get("precision") or "fp32").upper()
    if runtimes.TABLE.get(str(m.get("runtime")), runtimes.TABLE[runtimes.ORT]).runs == "module":
        return f"the model itself in {runtime}"
    name = str(m.get("name", ""))
    made = " by NNCF" if "nncf" in name else ""
    return f"{precision} file{made} in {runtime}"


def _listed_path(folder: Path, listed: str) -> Path:
    """A path quantize.json lists: absolute, relative to its folder, or (a source run) relative to where it ran."""
    p = Path(listed)
    if p.is_absolute() or not listed:
        return p
    return folder / p if (folder / p).exists() or not p.exists() else p


def _runtime_name(m: dict[str, Any]) -> str:
    """The runtime table's row label (eager, eager-bf16, ort-fp32, ort-int8, openvino-int8, ...)."""
    runtime = str(m.get("runtime") or runtimes.ORT).lower()
    try:
        return runtimes.row_name(runtime, str(m.get("precision") or "fp32").lower())
    except SlimcvError:
        return runtime  # a label from a newer or older slimcv: shown as written


def _summary_metrics(path: Path, curves: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics of the weights the folder deploys: best.safetensors is the best epoch's, so its validation
    record, not the last epoch's (summary.json's ``metrics``)."""
    summary = read_summary(path)
    best = summary.get("best") if isinstance(summary, dict) else None
    if isinstance(best, dict) and best.get("epoch") is not None and (path / BEST_WEIGHTS).is_file():
        record = next((r["val"] for r in curves if r.get("epoch") == best["epoch"] and isinstance(r.get("val"), dict)),
                      None)
        if record:
            return dict(record)
    if isinstance(summary, dict) and summary.get("metrics"):
        return dict(summary["metrics"])
    evaluated = [r["val"] for r in curves if isinstance(r.get("val"), dict)]
    return dict(evaluated[-1]) if evaluated else {}


def _weights_and_counts(e: Entry, count: bool) -> None:
    if e.model_path is None:
        e.notes.append("no model.json: the model cannot be loaded for counts, overlays or timing")
        return
    from slimcv.artifact import find_weights

    try:
        e.file_bytes = find_weights(e.path).stat().st_size
    except SlimcvError:
        e.notes.append("no weights file yet")
        e.model_path = None
        return
    if count:
        c = _count_run(e.path)
        e.params = c.get("params", e.params)
        e.macs = c.get("macs", e.macs)
        e.input_shape = c.get("input_shape")


def _count_run(path: Path) -> dict[str, Any]:
    """Params and MACs of a run folder's model at the size it was evaluated at ({} when it cannot be loaded)."""
    from slimcv.bench.macs import count_macs, count_params
    from slimcv.bench.sources import run_input_shape
    from slimcv.artifact import load_run_model

    try:
        model, spec = load_run_model(path)
        shape = run_input_shape(path, spec)
    except SlimcvError:
        return {}
    return {"params": count_params(model), "macs": count_macs(model, (1, *shape)), "input_shape": shape}


def _step_curves(path: Path) -> list[dict[str, Any]]:
    """Fine-tuning records of every pruning step, epochs numbered on one axis."""
    out: list[dict[str, Any]] = []
    for step in sorted(p for p in path.glob("step_*") if p.is_dir()):
        offset = out[-1]["epoch"] if out else 0
        records = read_jsonl(step / METRICS_JSONL)
        out += [{**r, "epoch": r.get("epoch", 0) + offset, "step": step.name} for r in records]
    return out


def _recorded_command(path: Path, info: dict[str, Any]) -> str | None:
    if (path / "command.txt").is_file():
        return (path / "command.txt").read_text().strip()
    cmd = info.get("command") or info.get("argv")
    return " ".join(cmd) if isinstance(cmd, list) else cmd


def _prune_command(cfg: dict[str, Any]) -> str | None:
    if not cfg.get("source"):
        return None
    flags = {"--remove": cfg.get("remove"), "--target": cfg.get("target"), "--method": cfg.get("method"),
             "--steps": cfg.get("steps"), "--importance": cfg.get("importance"),
             "--finetune-epochs": cfg.get("finetune_epochs"), "--lr": (cfg.get("optim") or {}).get("lr"),
             "--min-channels": cfg.get("min_channels"), "--seed": cfg.get("seed")}
    parts = [str(cfg["source"])] + [f"{k} {v}" for k, v in flags.items() if v is not None]
    if cfg.get("global_pruning"):
        parts.append("--global-pruning")
    if cfg.get("ignore"):
        parts.append("--ignore " + " ".join(cfg["ignore"]))
    if cfg.get("sensitivity"):
        parts.append("--sensitivity " + " ".join(str(r) for r in cfg["sensitivity"]))
    if cfg.get("max_drop") is not None:
        parts.append(f"--max-drop {cfg['max_drop']}")
    losses = cfg.get("distill") or []
    for spec in losses:
        parts.append(f"--distill {spec['name']}:{spec.get('weight', 1.0):g}")
    if losses:
        if losses[0].get("temperature") is not None:
            parts.append(f"-T {losses[0]['temperature']:g}")
        parts.append(f"--alpha {cfg.get('alpha', 1.0):g}")
    if cfg.get("out_dir"):
        parts.append(f"-o {cfg['out_dir']}_again")
    return "slimcv prune " + " ".join(parts)


def _unique_names(entries: list[Entry]) -> None:
    seen: dict[str, int] = {}
    for e in entries:
        seen[e.name] = seen.get(e.name, 0) + 1
        if seen[e.name] > 1:
            e.name = f"{e.name}#{seen[e.name]}"


