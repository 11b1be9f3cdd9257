"""``slimcv compress``: the fastest model this machine runs within a latency target and an accuracy budget.

One program, a measured search (``slimcv.pipeline.budget``): the source on every runtime and as NNCF INT8, pruned
copies and efficient students are timed untrained, those that meet the target are distilled from the source for
the time given, and the most accurate one that meets the target within ``max_drop`` wins. Every speed-up is against
the source in ONNX Runtime FP32, with the source at its own fastest runtime beside it. The winner is exported as a
deployable file with its sidecar; an HTML report compares it with the source. Run again with the same
``out_dir``, a killed search reuses every candidate it finished.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimcv._console import console
from slimcv.artifact import is_model_folder, run_data_config
from slimcv.config import CompressConfig, build_config
from slimcv.errors import SlimcvError
from slimcv.run_folder import COMPRESS_JSON, LAST_JSON, METRICS_JSONL, MODEL_JSON, QUANTIZE_JSON, SEARCH_STATE

DEFAULT_BUDGET_MINUTES = 30.0  # when the source's training time is unknown (a model trained elsewhere)
MIN_BUDGET_MINUTES = 5.0


@dataclass
class CompressResult:
    """The outcome: whether the target was met, the chosen model (on a miss, the closest), its deployable file,
    and every candidate measured."""

    met: bool
    model: Any  # the chosen network as an nn.Module (for INT8, the FP32 network its file was made from)
    file: Path | None  # the deployable file (ONNX or OpenVINO IR, with its .json sidecar)
    folder: Path | None  # the chosen model's folder (a model folder, or the quantize folder of an INT8 file)
    table: list[dict[str, Any]] = field(default_factory=list)  # one row per candidate (network x runtime)
    search: Any = None  # the BudgetResult
    report: Path | None = None
    plan: dict[str, Any] = field(default_factory=dict)
    sentence: str | None = None  # the outcome in one sentence (what the terminal, compress.json and the report say)


def compress(model: Any, data: Any = None, *, weights: str | Path | None = None, target_speedup: float | None = None,
             target_latency: float | None = None, budget_minutes: float | None = None, max_drop: float = 1.0,
             out_dir: str | Path = "runs/compress", dry_run: bool = False, source_name: str = "the source",
             **settings: Any) -> CompressResult:
    """Search for the most accurate model that meets the latency target (``target_speedup`` times the source in
    ONNX Runtime FP32, or ``target_latency`` ms at batch 1 on this machine) within ``max_drop`` points, spending
    about ``budget_minutes``. ``source_name`` is how the outcome's sentence calls the source. ``model`` is a model folder, an ``nn.Module``, a name or ``package.module:factory``
    with ``weights`` (saved as ``out_dir/source`` first), or a bare name (trained there first). ``settings`` are
    further :class:`~slimcv.config.CompressConfig` fields (``space``, ``proxy_epochs``, ``threads``, ...)."""
    cfg = build_config(CompressConfig, {"target_speedup": target_speedup, "target_latency": target_latency,
                                        "budget_minutes": budget_minutes, "max_drop": max_drop,
                                        "out_dir": str(out_dir), **settings}, "compress settings")
    out = Path(cfg.out_dir)
    source, data = _source_and_data(model, data, weights)
    plan = _plan(cfg, source, out)
    _print_plan(plan)
    if dry_run:
        return CompressResult(False, None, None, None, plan=plan)
    from slimcv._io import atomic_write_json, check_owned
    check_owned(out, SEARCH_STATE)
    if not (out / SEARCH_STATE).is_file():  # claims the folder before anything else is written there
        atomic_write_json(out / SEARCH_STATE, {"key": None, "spent_seconds": 0.0, "candidates": None,
                                               "reference_ms": None, "done": {}})
    folder = _prepare_source(source, data, weights, out / "source", cfg)
    if data is None:
        data = run_data_config(folder)
    budget = plan["budget_minutes"] or _default_budget(_training_minutes(folder))  # a source imported or trained here
    from slimcv.pipeline.budget import compress_to_budget

    r = compress_to_budget(folder, data, target_latency_ms=cfg.target_latency, target_speedup=cfg.target_speedup,
                           budget_minutes=budget, proxy_epochs=cfg.proxy_epochs, finalists=cfg.finalists,
                           finalist_gap=cfg.finalist_gap, frontier_share=cfg.frontier_share, space=cfg.space,
                           out_dir=out, latency_runs=cfg.latency_runs, threads=cfg.threads, progress=cfg.progress,
                           max_drop=cfg.max_drop, device=cfg.device)
    result = CompressResult(r.met, None, None, r.folder, table=_table(r), search=r, plan=plan)
    predict_ms = None
    if r.closest is not None:
        result.model, result.file = _deployable(r, data, out)
        predict_ms = _predict_ms(result.file, r.closest.runtime, data, cfg.threads)
    result.sentence = outcome_sentence(r, plan, result.file, source_name)
    console.print(result.sentence, highlight=False, soft_wrap=True)
    write_outcome(out, plan, r, result.sentence, predict_ms=predict_ms)
    if cfg.report and r.folder is not None:
        result.report = _report(folder, r.folder, out, cfg)
    return result


def _source_and_data(model: Any, data: Any, weights: str | Path | None) -> tuple[Any, Any]:
    """The source as given and its data: a model folder's recorded settings, moved to ``data`` when given."""
    from torch import nn

    if isinstance(model, nn.Module) or weights is not None:
        if data is None:
            raise SlimcvError("compress needs data (--data SPEC) to fine-tune and score a model given with "
                              "--weights or as a module.")
        return model, data
    path = Path(str(model))
    if path.is_file():
        if not is_model_folder(path.parent):
            raise SlimcvError(f"{model} is a bare weights file: give its run folder (with model.json), or "
                              "--model NAME --weights FILE.")
        path = path.parent  # a checkpoint inside a run folder: the run
    if path.is_dir():
        settings = run_data_config(path, data) if data is None or isinstance(data, str) else data
        if settings is None:
            raise SlimcvError(f"Give --data: {path} records no data settings to read.")
        return str(path), settings
    if (path.suffix or "/" in str(model)) and ":" not in str(model):
        raise SlimcvError(f"{model} does not exist; give a model folder, --model NAME --weights FILE, or a model "
                          "name to train first.")
    if data is None:
        raise SlimcvError(f"Give --data: {model!r} is not a model folder, so it is trained first and needs a dataset.")
    from slimcv.models import check_model_name

    check_model_name(str(model))
    return str(model), data


def _plan(cfg: CompressConfig, source: Any, out: Path) -> dict[str, Any]:
    """What the search will do, stated before it starts."""
    target = (f"{cfg.target_speedup:g}x the speed of the source in ONNX Runtime FP32" if cfg.target_speedup
              else f"{cfg.target_latency:g} ms at batch 1")
    folder = Path(str(source)) if isinstance(source, (str, Path)) and Path(str(source)).is_dir() else None
    if cfg.budget_minutes:
        minutes, why = cfg.budget_minutes, "--budget-minutes"
    elif folder is not None:
        trained = _training_minutes(folder)
        minutes = _default_budget(trained)
        why = "as long as the source took to train" if trained else "the default for a source trained elsewhere"
    else:
        minutes, why = None, "as long as the source takes to train (known once it is imported or trained)"
    return {"target": "latency" if cfg.target_latency else "speedup",
            "factor": cfg.target_speedup, "latency_ms": cfg.target_latency, "label": target,
            "max_drop": cfg.max_drop, "budget_minutes": minutes, "budget_why": why, "out_dir": str(out),
            "source": str(source) if isinstance(source, (str, Path)) else f"<{type(source).__name__}>"}


def _training_minutes(folder: Path) -> float | None:
    """How long the source's own training took (its epochs' recorded times), or None when not recorded."""
    from slimcv._io import read_jsonl

    seconds = sum(r.get("epoch_time_s", 0.0) for f in folder.glob(METRICS_JSONL) for r in read_jsonl(f))
    return seconds / 60 if seconds > 0 else None


def _default_budget(trained_minutes: float | None) -> float:
    """The search's default budget: the source's training time (at least MIN_BUDGET_MINUTES), else the default."""
    return max(MIN_BUDGET_MINUTES, math.ceil(trained_minutes)) if trained_minutes else DEFAULT_BUDGET_MINUTES


def _prepare_source(source: Any, data: Any, weights: str | Path | None, folder: Path, cfg: CompressConfig) -> Path:
    """The model folder the search starts from: as given, imported (module or name + weights), or trained."""
    from torch import nn

    if isinstance(source, nn.Module) or weights is not None:
        return _import_source(source, weights, data, folder)
    if Path(str(source)).is_dir():
        return Path(str(source))
    import slimcv

    console.print(f"compress: training {source} for {cfg.teacher_epochs} epochs first (--teacher-epochs)",
                  highlight=False, soft_wrap=True)
    values = {"model": str(source), "epochs": cfg.teacher_epochs, "out_dir": str(folder), "progress": cfg.progress,
              "tensorboard": False, "threads": cfg.threads, "resume": (folder / LAST_JSON).is_file()}
    slimcv.train(values, data=data)
    return folder


def _import_source(model: Any, weights: str | Path | None, data: Any, folder: Path) -> Path:
    """Save a user's trained model (module, or name / factory + weights) as a model folder the search starts from,
    with its validation metric, so every candidate compares against it."""
    from slimcv._io import check_owned
    from slimcv.artifact import check_rebuildable, load_inputs, metric_key, save_model, write_summary
    from slimcv.engine.evaluation import evaluate_model

    check_owned(folder, MODEL_JSON)
    loaded, bundle = load_inputs(model, data if not isinstance(data, str) else {"spec": data}, weights=weights)
    check_rebuildable(loaded.model, loaded.spec)
    metrics = evaluate_model(loaded.model, bundle, quiet=True).metrics
    key = metric_key(bundle.task)
    save_model(loaded.model, folder, loaded.spec, metrics=metrics)
    write_summary(folder, {"metrics": metrics, "best": {"metric": key, "value": metrics[key]}, "stage": "source"})
    if not isinstance(data, (tuple, list)):
        from slimcv.artifact import write_run_config

        write_run_config(folder, {"data": bundle.config.model_dump(mode="json"), "out_dir": str(folder),
                                  "stage": "source"})
    console.print(f"compress: saved the given model as {folder} ({key} {metrics[key]:.2f})", highlight=False, soft_wrap=True)
    return folder


def _deployable(r, data: Any, out: Path) -> tuple[Any, Path | None]:
    """The chosen network and its deployable file: the INT8 file of its quantize folder, else an ONNX export."""
    from slimcv.artifact import load_run_model, read_json

    c = r.closest
    if c.precision == "int8":
        info = read_json(r.folder / QUANTIZE_JSON) or {}
        from slimcv.deploy.runtimes import OPENVINO
        from slimcv.quantize.quantize import NNCF_VARIANT, model_name

        row = next((m for m in info.get("models", []) if m["name"] == model_name(NNCF_VARIANT, OPENVINO)), None)
        source = next((e["of"] for e in r.log if e.get("stage") == "int8" and e["candidate"] == c.name), None)
        model = load_run_model(source)[0] if source else None
        return model, (r.folder / row["path"]) if row else None
    import slimcv

    model, _ = load_run_model(r.folder)
    path = out / "deploy" / "model.onnx"
    slimcv.export(str(r.folder), path, data if isinstance(data, (str, dict)) else None)
    return model, path


def _report(source: Path, chosen: Path, out: Path, cfg: CompressConfig) -> Path | None:
    import slimcv

    runs = [str(source)] + ([str(chosen)] if chosen.resolve() != source.resolve() else [])
    r = slimcv.report(runs, out=out / "report", baseline=source.name, measure=True, images=cfg.report_images,
                      threads=cfg.threads, title="compress", quiet=True)
    return Path(r.html) if getattr(r, "html", None) else None


def _table(r) -> list[dict[str, Any]]:
    best = r.source_best.latency_ms if r.source_best else None
    return [{"candidate": c.name, "kind": c.kind, "runtime": c.runtime, "precision": c.precision,
             "params": c.params, "macs": c.macs, "latency_ms": c.latency_ms, "speedup": c.speedup,
             "speedup_vs_source_best": best / c.latency_ms if best and c.latency_ms else None, "meets": c.meets,
             "metric": c.metric, "notes": list(c.notes)} for c in r.candidates]


def outcome_sentence(r, plan: dict[str, Any], file: Path | None, source_name: str = "the source") -> str:
    """The outcome in one sentence: how many times faster than the source on this CPU, in which runtime and
    precision, at what cost in points, and the file to serve; on a miss, what was closest."""
    from slimcv.deploy.runtimes import computes_in, default_for, get

    c = r.closest
    if c is None:
        return (f"Target not met: no candidate reached {plan['label']} with a measured accuracy in the time given"
                f"{frontier_clause(r, plan)}; give more --budget-minutes or relax the target.")
    how = f"{get(c.runtime).title}, {computes_in(c.runtime, c.precision).upper()}"
    cost = "" if c.metric is None or r.source_metric is None else f", {c.metric - r.source_metric:+.1f} points"
    flag = f" --runtime {c.runtime}" if file and default_for(file) != c.runtime else ""
    serve = f", file {file}; serve it with `slimcv serve {file}{flag}`" if file else ""
    what = f"{c.speedup:.1f}x faster than {source_name} in ONNX Runtime FP32 on this CPU ({how}){cost}{serve}"
    if r.met:
        return what[0].upper() + what[1:] + "."
    return (f"Target not met within {plan['max_drop']:g} points: the closest is {what}{frontier_clause(r, plan)} "
            "(more --budget-minutes or a looser target may meet it).")


def fastest_within(r, max_drop: float):
    """The fastest candidate scored within ``max_drop`` points of the source (the source itself included), or
    None: on a miss, the other end of the frontier."""
    if r.source_metric is None:
        return None
    scored = [c for c in r.candidates if c.metric is not None and c.speedup
              and r.source_metric - c.metric <= max_drop + 1e-9]
    return max(scored, key=lambda c: c.speedup, default=None)


def frontier_clause(r, plan: dict[str, Any]) -> str:
    """'; within D points the fastest is N in RUNTIME, Sx at -P points (--target-speedup S chooses it)'."""
    from slimcv.deploy.runtimes import computes_in, get

    f = fastest_within(r, plan["max_drop"])
    if f is None:
        return f"; nothing scored within {plan['max_drop']:g} points"
    how = f"{get(f.runtime).title} {computes_in(f.runtime, f.precision).upper()}"
    if plan.get("target") == "latency":
        flag = f"--target-latency {math.ceil(f.latency_ms * 100) / 100:g}"
    else:
        flag = f"--target-speedup {math.floor(f.speedup * 10) / 10:g}"
    return (f"; within {plan['max_drop']:g} points the fastest is {f.name} in {how}, {f.speedup:.1f}x at "
            f"{f.metric - r.source_metric:+.1f} points ({flag} chooses it)")


def _predict_ms(file: Path | None, runtime: str, data: Any, threads: int | None, runs: int = 20) -> float | None:
    """A detector's whole prediction with the chosen file (resize, network, box selection beside it), median ms on
    one validation image; the search compares networks, and this is what a served request costs. None for other
    tasks."""
    import statistics

    import numpy as np

    from slimcv.data import as_bundle

    bundle = as_bundle(data)
    if file is None or bundle.task != "detection":
        return None
    from slimcv.deploy.predictor import Predictor

    predictor = Predictor(file, threads=threads, runtime=runtime)
    image = (bundle.val[0][0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)  # in [0, 1]: no mean
    times = []
    for _ in range(runs + 2):
        start = time.perf_counter()
        predictor(image)
        times.append((time.perf_counter() - start) * 1e3)
    ms = statistics.median(times[2:])
    console.print(f"compress: a whole prediction with {file.name} (resize, network, box selection) takes {ms:.2f} ms "
                  "on a validation image", highlight=False, soft_wrap=True)
    return ms


def write_outcome(out_dir: Path, plan: dict[str, Any], r, sentence: str | None = None,
                  predict_ms: float | None = None) -> Path:
    """``compress.json``: the target, the plan and the measured outcome, for the report's verdict and the record."""
    from slimcv._io import atomic_write_json

    c = r.closest
    summary = "no candidate meets the latency budget with a measured accuracy"
    if c is not None:
        summary = f"{c.speedup:.2f}x with {c.name} in {c.label}"
        if c.metric is not None and r.source_metric is not None:
            summary += f", {c.metric - r.source_metric:+.2f} pt against the source's {r.source_metric:.2f}"
        if not r.met:
            summary += f", outside the {plan['max_drop']:g} pt budget (the closest)"
    fastest = fastest_within(r, plan["max_drop"]) if not r.met else None
    outcome = {"met": r.met, "summary": summary, "sentence": sentence,
               "fastest_within_max_drop": fastest.to_json() if fastest else None, "chosen": c.to_json() if c else None,
               "folder": str(r.folder) if r.folder else None, "folder_in_out_dir": _inside(r.folder, out_dir),
               "reference_ms": r.reference_ms,
               "budget_ms": r.budget_ms, "source_metric": r.source_metric, "predict_ms": predict_ms,
               "search_seconds": r.seconds, "phases_seconds": {k: round(v, 1) for k, v in r.phases.items()}}
    return atomic_write_json(out_dir / COMPRESS_JSON, {"stage": "compress",
                                                         "target": {"kind": plan["target"], "label": plan["label"]},
                                                         "plan": plan, "outcome": outcome})


def _inside(folder: Path | None, out_dir: Path) -> str | None:
    """``folder`` relative to ``out_dir`` when it lies inside (so the record survives moving the folder)."""
    try:
        return Path(folder).resolve().relative_to(Path(out_dir).resolve()).as_posix() if folder else None
    except ValueError:
        return None


def _print_plan(plan: dict[str, Any]) -> None:
    minutes = plan["budget_minutes"]
    budget = f"{minutes:g} min ({plan['budget_why']})" if minutes else plan["budget_why"]
    console.print(f"compress: target {plan['label']}, losing at most {plan['max_drop']:g} pt; search budget "
                  f"{budget}; results in {plan['out_dir']}", highlight=False, soft_wrap=True)
