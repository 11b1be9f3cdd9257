"""`slimcv report`: one self-contained HTML page (figures embedded) and a Markdown summary comparing runs."""
from __future__ import annotations

import base64
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from slimcv._console import console, print_table
from slimcv._io import atomic_write, atomic_write_json, atomic_write_text
from slimcv.errors import SlimcvError
from slimcv.report import overlays as O
from slimcv.report import plots as P
from slimcv.report.collect import Entry, add_bench, collect
from slimcv.report.verdict import same_measurement_speedup, verdict
from slimcv import run_folder
from slimcv.run_folder import REPORT_JSON
from slimcv.deploy import runtimes

RUNTIME_ORDER = (runtimes.EAGER, runtimes.row_name(runtimes.ORT, "fp32"), runtimes.row_name(runtimes.ORT, "int8"))


@dataclass
class ReportResult:
    """Where the report went and what it holds."""

    html: Path
    markdown: Path
    figures: dict[str, Path]
    entries: list[Entry] = field(repr=False)
    notes: list[str] = field(default_factory=list)


def report(runs: list[str | Path], *, out: str | Path = "report", baseline: str | None = None,
           bench: list[str | Path] | None = None, measure: bool | str = False, images: int = 4, predict: bool = True,
           threads: int | None = None, title: str | None = None, quiet: bool = False) -> ReportResult:
    """Compare run folders: table, Pareto plots, per-class scores, confusion matrices, overlays, curves, configs.

    ``measure=True`` times the entries that hold no latency; ``measure="all"`` times every entry in one interleaved
    run and replaces stored latencies, so every ratio comes from the same moment of the same machine."""
    from slimcv._io import check_owned

    check_owned(out, REPORT_JSON)  # a folder of the user's is never written into
    entries = collect(runs)
    notes: list[str] = []
    for b in bench or []:
        notes.append(f"latencies from {b} filled {add_bench(entries, b)} model(s)")
    if measure:
        notes += _measure(entries, threads, quiet, replace=measure == "all")
    base = _baseline(entries, baseline)
    bundle = O.load_bundle(base.data or next((e.data for e in entries if e.data), None))
    info = bundle.info if bundle is not None else None
    class_names = list(info.class_names) if info else list(base.per_class)
    task = info.task if info else base.task
    preds = _predictions(entries, base, bundle, images if task in ("segmentation", "detection") else 0, predict,
                         threads, notes,
                         quiet)
    colors = P.entry_colors(entries)
    figures = _figures(entries, base, bundle, preds, colors, class_names, task, notes)
    if len({_source(v) for e in entries for v in e.latency.values()}) > 1:
        notes.append("latencies come from several measurements (see the footnotes of the table), so ratios across "
                     "them are not fair on a shared machine; --remeasure times every model in one interleaved run")
    searches = [Path(str(p)) for p in runs if isinstance(p, (str, Path)) and run_folder.kind(p) == "compress"]
    context = _context(entries, base, figures, colors, class_names, info, task, title, notes, searches)
    result = _write(Path(out), context, figures, entries)  # ownership checked before any work, below
    if not quiet:
        _print(context, result)
    return result


def _baseline(entries: list[Entry], name: str | None) -> Entry:
    if name is None:
        return entries[0]
    for e in entries:
        if e.name == name or e.path.name == name:
            return e
    raise SlimcvError(f"Baseline {name!r} is not among the reported models {[e.name for e in entries]}; pick one.")


def _measure(entries: list[Entry], threads: int | None, quiet: bool, replace: bool) -> list[str]:
    """Time, in one interleaved bench, every entry that has no latency yet (every entry when ``replace``)."""
    from slimcv.bench.bench import bench
    from slimcv.report.collect import source_key

    todo = [e for e in entries if (replace or not e.latency) and e.model_path is not None]
    if not todo:
        return []
    sources = list({source_key(e.model_path): str(e.model_path) for e in todo}.values())
    try:
        result = bench(sources, threads=threads, batch_sizes=(1,), memory=False, quiet=quiet)
    except SlimcvError as err:
        return [f"could not time the models: {err}"]
    by_source = {source_key(m.source): m for m in result.models}
    for e in todo:
        m = by_source.get(source_key(e.model_path))
        if m is not None and replace:
            e.latency.clear()
        for r in m.runtimes if m else []:
            e.latency[r.runtime] = {"median": r.latency_ms.median, "p90": r.latency_ms.p90,
                                    "threads": result.settings.threads,
                                    "from": "this report's --measure (one interleaved run)"}
    return [f"{len(todo)} model(s) timed by this report in one interleaved run at batch 1 with "
            f"{result.settings.threads} thread(s)"]


def _predictions(entries, base, bundle, images, predict, threads, notes, quiet) -> dict[str, O.Predictions]:
    if not predict:
        return {}
    if bundle is None:
        notes.append("the validation data is not available here, so overlays and missing confusion matrices are "
                      "left out")
        return {}
    indices = O.fixed_indices(len(bundle.val), images)
    wanted = {base.name, entries[-1].name}
    out: dict[str, O.Predictions] = {}
    done: dict[tuple[str, str], O.Predictions] = {}  # the same model and data are run once
    for e in entries:
        confusion = e.name in wanted and "confusion_matrix" not in e.metrics and bundle.task != "detection"
        if e.model_path is None or not (indices or confusion):
            continue
        data = _entry_bundle(e, bundle)
        key = (str(Path(e.model_path).resolve()), data.config.model_dump_json())
        if key in done and (done[key].confusion is not None or not confusion):
            out[e.name] = done[key]
            continue
        if not quiet:
            console.print(f"predicting {e.name} ({'full validation split' if confusion else f'{len(indices)} images'})")
        try:
            run = O.predict_boxes(e, data, indices, threads) if bundle.task == "detection" else \
                O.predict(e, data, indices, confusion, threads)
            out[e.name] = done[key] = run
        except (SlimcvError, RuntimeError, ValueError) as err:
            notes.append(f"could not run {e.name} on the validation images: {err}")
    return out


def _entry_bundle(e: Entry, base_bundle):
    """The entry's own evaluation size when its data config names the same dataset, else the baseline's."""
    keys = ("spec", "size", "eval_size", "val_split", "val_subset", "options")
    base = base_bundle.config.model_dump()
    if e.data and e.data.get("spec") == base["spec"] and any(_same(e.data.get(k)) != _same(base[k]) for k in keys):
        return O.load_bundle(e.data) or base_bundle
    return base_bundle


def _same(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _figures(entries, base, bundle, preds, colors, class_names, task, notes) -> dict[str, bytes]:
    info = bundle.info if bundle is not None else None
    figs: dict[str, bytes | None] = {
        "pareto": P.pareto_figure(entries, colors),
        "per_class": P.per_class_figure(entries, colors, class_names, info.palette if info else None, task),
        "confusion": P.confusion_figure(_confusions(entries, base, preds), class_names),
        "curves": P.curves_figure(entries, colors),
        "pr": P.pr_figure(entries, colors, class_names) if task == "detection" else None,
    }
    if figs["pareto"] is None:
        notes.append("no entry has both a metric and a latency or size: the Pareto plots are left out "
                     "(pass --measure or --bench)")
    if preds and info is not None and info.palette and task == "segmentation":
        shown = [e for e in entries if e.name in preds]
        indices = sorted(next(iter(preds.values())).masks)
        for i, (image, truth) in O.raw_samples(bundle, indices).items():
            maps = {e.name: preds[e.name].masks[i] for e in shown if i in preds[e.name].masks}
            figs[f"overlay_{i:04d}"] = O.overlay_figure(image, truth, maps, class_names, info.palette,
                                                        info.ignore_index, f"validation image #{i}")
    if preds and bundle is not None and task == "detection":
        shown = [e for e in entries if e.name in preds]
        indices = sorted(next(iter(preds.values())).boxes)
        hw = bundle.val[0][0].shape[-2:]
        for i, (image, truth) in O.raw_detection_samples(bundle, indices).items():
            boxes = {e.name: preds[e.name].boxes[i] for e in shown if i in preds[e.name].boxes}
            figs[f"overlay_{i:04d}"] = O.boxes_figure(image, truth, boxes, hw, class_names,
                                                      f"validation image #{i}")
    return {k: v for k, v in figs.items() if v is not None}


def _confusions(entries, base, preds) -> list[tuple[str, Any]]:
    out = []
    for e in [base] + ([entries[-1]] if entries[-1] is not base else []):
        mat = e.metrics.get("confusion_matrix")
        if mat is None and e.name in preds:
            mat = preds[e.name].confusion
        if mat is not None:
            out.append((e.name + (" (baseline)" if e is base else ""), np.asarray(mat)))
    return out


def _context(entries, base, figures, colors, class_names, info, task, title, notes, searches=()) -> dict[str, Any]:
    runtimes = [rt for rt in RUNTIME_ORDER if any(rt in e.latency for e in entries)]
    runtimes += sorted({rt for e in entries for rt in e.latency} - set(runtimes))
    metric = base.metric_name or "metric"
    sources = list(dict.fromkeys(_source(v) for e in entries for v in e.latency.values()))
    rows = []
    for e in entries:
        # a speed-up only between latencies of one measurement (one interleaved run), never across runs
        fast = (1.0, base.best_latency[0]) if e is base and base.best_latency else same_measurement_speedup(base, e)
        rows.append({
            "name": e.name, "kind": e.kind, "how": e.how, "color": colors[e.name], "metric": e.metric,
            "delta": e.metric - base.metric if e.metric is not None and base.metric is not None else None,
            "params_m": _div(e.params, 1e6), "gmacs": _div(e.macs, 1e9), "size_mib": _div(e.file_bytes, 2**20),
            "latency": {rt: e.latency.get(rt, {}).get("median") for rt in runtimes},
            "latency_src": {rt: sources.index(_source(e.latency[rt])) + 1 for rt in runtimes if rt in e.latency},
            "speedup": fast[0] if fast else None, "fastest": fast[1] if fast else None,
            "is_baseline": e is base,
        })
    palette = list(info.palette) if info and info.palette else []
    per_class = [{"name": n, "rgb": palette[i] if i < len(palette) else None,
                  "values": [e.per_class.get(n) for e in entries]} for i, n in enumerate(class_names)]
    threads = sorted({str(v.get("threads")) for e in entries for v in e.latency.values() if v.get("threads")})
    return {
        "verdict": [asdict(v) for v in verdict(entries, base, searches=searches)],
        "title": title or f"slimcv report: {len(entries)} models" + (f" on {info.name}" if info else ""),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "dataset": info.name if info else None, "task": task, "metric": metric,
        "metric_label": P.METRIC_LABEL.get(metric, metric), "baseline": base.name, "runtimes": runtimes,
        "rows": rows, "entries": entries, "per_class": per_class, "figures": sorted(figures),
        "overlays": sorted(k for k in figures if k.startswith("overlay_")), "threads": ", ".join(threads),
        "latency_sources": sources,
        "configs": [{"name": e.name, "kind": e.kind, "path": str(e.path), "command": e.command,
                     "command_recorded": e.command_recorded,
                     "config": json.dumps(e.config, indent=2, default=str) if e.config else None,
                     "notes": e.notes} for e in entries],
        "legend": [{"name": n, "rgb": palette[i]} for i, n in enumerate(class_names) if i < len(palette)],
        "error_rgb": O.error_color(palette), "error_name": O.ERROR_NAMES[O.error_color(palette)], "void_rgb": O.void_color(palette), "notes": notes,
    }


def _source(lat: dict[str, Any]) -> str:
    """Where a latency was measured, with its thread count: one footnote per distinct measurement."""
    threads = f", {lat['threads']} thread(s)" if lat.get("threads") else ""
    return f"{lat.get('from') or 'unknown'}{threads}"


def _div(v: float | None, unit: float) -> float | None:
    return None if v is None else v / unit


def _write(out: Path, context: dict[str, Any], figures: dict[str, bytes], entries: list[Entry]) -> ReportResult:
    paths = {}
    for name, png in figures.items():
        paths[name] = atomic_write(out / "figures" / f"{name}.png", lambda p, b=png: Path(p).write_bytes(b))
    env = _environment()
    html = env.get_template("report.html.j2").render(
        **context, images={k: base64.b64encode(v).decode("ascii") for k, v in figures.items()})
    md = env.get_template("report.md.j2").render(**context, images={k: f"figures/{k}.png" for k in figures})
    html_path = atomic_write_text(out / "report.html", html)
    md_path = atomic_write_text(out / "report.md", md)
    json_path = atomic_write_json(out / REPORT_JSON, {"baseline": context["baseline"], "metric": context["metric"],
                                                        "verdict": context["verdict"], "rows": context["rows"],
                                                        "notes": context["notes"]})
    for p in [html_path, md_path, json_path, *paths.values()]:
        p.chmod(0o644)  # a page to share: readable like any file written with open(), not 0600 like a temp file
    return ReportResult(html_path, md_path, paths, entries, context["notes"])


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("slimcv.report", "templates"), undefined=StrictUndefined,
                      autoescape=select_autoescape(["html", "html.j2"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _num
    env.filters["signed"] = lambda v, d=1: "—" if v is None else f"{v:+.{d}f}"
    env.filters["rgb"] = lambda c: "#%02x%02x%02x" % tuple(c) if c else "transparent"
    env.filters["breakable"] = _breakable
    return env


def _breakable(name: str):
    """A model name that may wrap after ':', '_' and '-' (a table header), never inside a word."""
    from markupsafe import Markup, escape

    text = str(escape(name))
    for sep in (":", "_", "-"):
        text = text.replace(sep, sep + "<wbr>")
    return Markup(text)


def _num(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}"


def _print(ctx: dict[str, Any], result: ReportResult) -> None:
    rows = [(r["name"], r["kind"], r["metric"], r["delta"], r["params_m"], r["gmacs"], r["size_mib"],
             *[r["latency"][rt] for rt in ctx["runtimes"]], r["speedup"]) for r in ctx["rows"]]
    print_table(f"report: {ctx['metric']} vs baseline {ctx['baseline']}",
                ["model", "stage", ctx["metric"], "delta", "params (M)", "GMACs", "size (MiB)",
                 *[f"{rt} ms" for rt in ctx["runtimes"]], f"speed-up vs {ctx['baseline']} (one measurement)"], rows)
    for v in ctx["verdict"]:
        print(f"verdict: {v['text']}")
    for n in ctx["notes"]:
        console.print(f"note: {n}")
    console.print(f"wrote {result.html} and {result.markdown} ({len(result.figures)} figures)")
