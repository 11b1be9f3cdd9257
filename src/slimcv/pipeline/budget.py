"""Compress to a latency budget within a time budget: measure every candidate first, rank those that meet the
budget by a short distillation run, spend the remaining time on the best, return the most accurate one.

1. The source and every candidate (pruned copies, layer-uniform and sensitivity-guided; efficient students) are
   timed untrained, per runtime, in one interleaved run (``search``).
2. Each candidate that meets the latency budget gets a proxy run: ``proxy_epochs`` of KD from the source
   (students from scratch; pruned copies keep the source's weights and fine-tune with KD).
3. The best ``finalists`` by proxy metric are trained again with the epochs the rest of the time allows.
4. Networks whose NNCF INT8 file meets the budget are quantized once trained (the source at once: it needs no
   training) and scored as deployed.
5. The most accurate candidate that meets the budget wins; the source itself counts, on any runtime or
   precision where it already meets it.
``compress_search.json`` lists every candidate with its latency, proxy and final metric.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimcv._console import console, print_table
from slimcv._io import atomic_write_json
from slimcv.errors import SlimcvError
from slimcv.pipeline import search as S

KD = {"segmentation": {"name": "kd", "weight": 1.0, "temperature": 1.0},
      "classification": {"name": "kd", "weight": 1.0, "temperature": 4.0}}


@dataclass
class BudgetResult:
    """The winner (None when nothing meets the budget), every candidate, and the time spent."""

    winner: S.Candidate | None
    folder: Path | None
    candidates: list[S.Candidate]
    reference_ms: float
    budget_ms: float
    seconds: float
    source_metric: float | None = None
    log: list[dict[str, Any]] = field(default_factory=list)
    folders: dict[str, Path] = field(default_factory=dict)  # "<name>/int8" -> its quantize folder


def compress_to_budget(source: str | Path, data: Any, *, target_latency_ms: float | None = None,
                       target_speedup: float | None = None, budget_minutes: float = 60.0, proxy_epochs: int = 1,
                       finalists: int = 2, finalist_gap: float | None = 5.0, space: S.SearchSpace | None = None,
                       out_dir: str | Path = "runs/compress",
                       latency_runs: int = 15, threads: int | None = 1, progress: bool = True,
                       max_drop: float | None = None) -> BudgetResult:
    """Search the candidates of ``source`` (a model folder) for the most accurate one that meets the latency
    target on this machine, spending at most ``budget_minutes`` (the last run may overrun by one epoch).
    A candidate whose proxy trails the best one's by more than ``finalist_gap`` points is not a finalist, so the
    time goes to those that can still win. ``max_drop`` (points) only marks the allowed band in ``frontier.png``."""
    from slimcv.artifact import metric_key, read_summary
    from slimcv.data import as_bundle

    start = time.perf_counter()
    deadline = start + budget_minutes * 60
    folder = Path(source)
    if not folder.is_dir():
        raise SlimcvError(f"{folder} is not a model folder; train or import the model first (slimcv train, or "
                          "slimcv compress with --weights).")
    bundle = as_bundle(data)
    out = Path(out_dir)
    candidates, reference = _measured_candidates(folder, bundle, space, out, latency_runs, threads, progress)
    budget = S.within_budget(candidates, reference, target_latency_ms=target_latency_ms,
                             target_speedup=target_speedup)
    key = metric_key(bundle.task)
    source_metric = (read_summary(folder) or {}).get("metrics", {}).get(key)
    for c in candidates:
        if c.kind == "source" and c.precision == "fp32":
            c.metric = source_metric
    result = BudgetResult(None, None, candidates, reference, budget, 0.0, source_metric)
    folders: dict[str, Path] = {"source": folder}
    t = time.perf_counter()
    _score_int8(candidates, "source", folder, out, bundle, threads, key, result)
    int8_seconds = time.perf_counter() - t  # what quantizing a trained network costs, kept free at the end
    trainable = [c for c in S.best_runtime_each(candidates) if c.kind != "source"]
    console.print(f"reference: the source in ONNX Runtime FP32, {reference:.2f} ms; budget {budget:.2f} ms; "
                  f"{len(trainable)} of {len({c.name for c in candidates}) - 1} candidates meet it")
    common = dict(bundle=bundle, folder=folder, task=bundle.task, progress=progress, threads=threads,
                  source_macs=next(c.macs for c in candidates if c.kind == "source"))
    for i, c in enumerate(sorted(trainable, key=lambda c: -c.macs)):  # the largest (most capable) first
        if time.perf_counter() > deadline:
            c.notes.append("no time left for its proxy run")
            continue
        _phase(f"proxy run {i + 1}/{len(trainable)}: {c.name} ({c.label}), {proxy_epochs} epoch(s)", deadline)
        t = time.perf_counter()
        c.metric = _train(c, out / "proxy" / c.name, proxy_epochs, **common)
        folders[c.name] = out / "proxy" / c.name
        total = time.perf_counter() - t
        per_epoch = _epoch_seconds(out / "proxy" / c.name) or total / proxy_epochs
        setup = max(0.0, total - per_epoch * proxy_epochs)  # pruning, caching, evaluation before and after
        result.log.append({"candidate": c.name, "stage": "proxy", "epochs": proxy_epochs, "metric": c.metric,
                           "seconds_per_epoch": per_epoch, "setup_seconds": setup})
        c.notes.append(f"proxy: {proxy_epochs} epoch(s), {per_epoch:.1f} s each")
    ranked = choose_finalists(trainable, finalists, finalist_gap)
    reserve = int8_seconds * sum(any(o.name == c.name and o.precision == "int8" and o.meets for o in candidates)
                                 for c in trainable if c.metric is not None)
    _final_round(ranked, deadline - reserve, proxy_epochs, out, folders, result, common)
    for c in trainable:  # every runtime of a trained network scores as it trained; its INT8 file once quantized
        if c.metric is None:
            continue
        trained = c.metric  # of the FP32 weights; an INT8 candidate scores only once its file is evaluated
        for other in candidates:
            if other.name == c.name:
                other.metric = trained if other.precision == "fp32" else None
        _score_int8(candidates, c.name, folders[c.name], out, bundle, threads, key, result)
    meeting = [c for c in candidates if c.meets and c.metric is not None]
    if meeting:
        best = max(meeting, key=lambda c: (c.metric, -c.latency_ms))
        result.winner = best
        result.folder = result.folders[f"{best.name}/int8"] if best.precision == "int8" else folders[best.name]
    result.seconds = time.perf_counter() - start
    _write(out, result, target_latency_ms, target_speedup, key)
    _plot(out, result, key, max_drop)
    _print(result, key)
    return result


def choose_finalists(trained: list[S.Candidate], n: int, gap: float | None) -> list[S.Candidate]:
    """The ``n`` best candidates by proxy metric, less those more than ``gap`` points behind the best (noted)."""
    ranked = sorted((c for c in trained if c.metric is not None), key=lambda c: -c.metric)[:n]
    if not ranked or gap is None:
        return ranked
    lead = ranked[0].metric
    for c in ranked[1:]:
        if lead - c.metric > gap:
            c.notes.append(f"not a finalist: its proxy trailed the best by {lead - c.metric:.1f} pt")
    return [c for c in ranked if lead - c.metric <= gap]


def _measured_candidates(folder: Path, bundle, space: S.SearchSpace | None, out: Path, latency_runs: int,
                         threads: int | None, progress: bool) -> tuple[list[S.Candidate], float]:
    """Every candidate of the source in ``folder``, timed untrained in one interleaved run, and the reference
    latency (the source in ONNX Runtime FP32)."""
    from slimcv.artifact import load_run_model
    from slimcv.data import spread

    model, _ = load_run_model(folder)
    example = bundle.val[0][0][None]
    _phase("measuring the candidates: sensitivity of each layer, then every network timed untrained", None)
    space = space or S.SearchSpace(students=S.default_students(bundle.task, tuple(example.shape[-2:])))
    layer_ratios = None
    if space.sensitivity_drops:  # each layer pruned alone, scored on a few validation batches
        from slimcv.prune.prune import sensitivity_analysis

        sens = sensitivity_analysis(model, example, bundle, ratios=space.sensitivity_ratios, out_dir=out,
                                    progress=progress)
        layer_ratios = S.sensitivity_candidates(sens, space.sensitivity_drops)
    cands_nets = S.enumerate_candidates(model, example, bundle.num_classes, bundle.task, space, layer_ratios)
    calibration = [bundle.train[i][0] for i in spread(8, len(bundle.train))]
    reference = S.measure(cands_nets, example, runs=latency_runs, threads=threads, calibration=calibration)
    return [c for c, _ in cands_nets], reference


def _final_round(ranked: list[S.Candidate], deadline: float, proxy_epochs: int, out: Path,
                 folders: dict[str, Path], result: BudgetResult, common: dict[str, Any]) -> None:
    """Train the finalists again, sharing the time left before ``deadline`` between them."""
    for i, c in enumerate(ranked):
        left = deadline - time.perf_counter()
        _phase(f"final run {i + 1}/{len(ranked)}: {c.name}", deadline)
        proxy = next(r for r in result.log if r["candidate"] == c.name)
        epochs = int((left / (len(ranked) - i) - proxy["setup_seconds"]) / proxy["seconds_per_epoch"])
        if epochs <= proxy_epochs:
            c.notes.append("kept its proxy run: no time for a longer one")
            continue
        metric = _train(c, out / "final" / c.name, epochs, **common)
        result.log.append({"candidate": c.name, "stage": "final", "epochs": epochs, "metric": metric})
        c.notes.append(f"final: {epochs} epochs")
        c.metric = metric
        folders[c.name] = out / "final" / c.name


def _phase(what: str, deadline: float | None) -> None:
    """One progress line per phase and candidate, with the time left (also when stdout is a log file)."""
    left = f" ({max(0.0, deadline - time.perf_counter()) / 60:.1f} min of the budget left)" if deadline else ""
    console.print(f"compress: {what}{left}", highlight=False)


def _epoch_seconds(run_dir: Path) -> float | None:
    """Mean training-epoch time (evaluation included) recorded under ``run_dir``, or None."""
    from slimcv._io import read_jsonl

    times = [r["epoch_time_s"] for f in run_dir.rglob("metrics.jsonl") for r in read_jsonl(f) if "epoch_time_s" in r]
    return sum(times) / len(times) if times else None


def _score_int8(candidates: list[S.Candidate], name: str, folder: Path, out: Path, bundle, threads: int | None,
                key: str, result: BudgetResult) -> None:
    """Quantize the trained network ``name`` (in ``folder``) with NNCF and score its INT8 file in OpenVINO, when
    that candidate meets the budget; the folder is recorded for the winner."""
    int8 = next((c for c in candidates if c.name == name and c.precision == "int8" and c.meets), None)
    if int8 is None:
        return
    _phase(f"INT8: quantizing {name} with NNCF and scoring it as deployed", None)
    import slimcv

    q_dir = out / "int8" / name
    q = slimcv.quantize(str(folder), data=bundle, out_dir=str(q_dir), calibration=(), nncf=True, eager=False,
                        latency_runs=1, threads=threads, progress=False)
    row = next((m for m in q.models if m["name"] == "int8_nncf_openvino"), None)
    if row is None:
        int8.notes.append("NNCF INT8 could not be built here")
        return
    int8.metric = row["metrics"][key]
    int8.notes.append(f"NNCF INT8 of {folder}")
    result.log.append({"candidate": name, "stage": "int8", "metric": int8.metric, "folder": str(q_dir)})
    result.folders[f"{name}/int8"] = q_dir


def _train(c: S.Candidate, run_dir: Path, epochs: int, *, bundle, folder: Path, task: str, progress: bool,
           threads: int | None, source_macs: int) -> float:
    """Train one candidate with KD from the source; returns its validation metric."""
    import slimcv
    from slimcv.artifact import metric_key

    kd = KD[task]
    if c.kind == "pruned":
        how = ({"layer_ratios": c.build["layer_ratios"]} if "layer_ratios" in c.build
               else {"remove": 1 - c.macs / source_macs, "target": "macs"})
        r = slimcv.prune(str(folder), data=bundle, **how, finetune_epochs=epochs, distill=[kd], out_dir=str(run_dir),
                         progress=progress, latency_runs=0, round_to=S.ROUND_TO, threads=threads)
        return r.after["metrics"][metric_key(task)]
    from slimcv.artifact import read_run_config

    build = {k: v for k, v in c.build.items() if k != "inherit"}
    if c.build.get("inherit"):  # start from the source's blocks that the shallower network shares
        build["weights"] = str(_inherited(c, folder, run_dir, bundle.num_classes))
    values = {**build, "teacher": str(folder), "epochs": epochs, "losses": [kd], "out_dir": str(run_dir),
              "progress": progress, "threads": threads, "tensorboard": False,
              "class_weights": (read_run_config(folder) or {}).get("class_weights")}  # the source's loss
    if task == "segmentation":  # the teacher's maps are computed once and shared by every student
        values.update(mode="offline", cache={"dir": str(run_dir.parent.parent / "teacher_cache")})
    r = slimcv.distill(values, data=bundle)
    return r.train.best.get("value", r.train.metrics[metric_key(task)])


def _inherited(c: S.Candidate, folder: Path, run_dir: Path, num_classes: int) -> Path:
    """A weights file for student ``c`` holding the source's tensors it shares (``search.inherit_weights``)."""
    from slimcv._io import atomic_write_safetensors
    from slimcv.artifact import load_run_model
    from slimcv.models import create_model

    source, _ = load_run_model(folder)
    net = create_model(c.build["model"], num_classes, **c.build["model_kwargs"])
    S.inherit_weights(source, net)
    path = run_dir.parent / f"{c.name}.init.safetensors"
    atomic_write_safetensors({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    return path


def _write(out: Path, r: BudgetResult, target_latency_ms, target_speedup, key: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "compress_search.json", {
        "target": {"latency_ms": target_latency_ms, "speedup": target_speedup, "budget_ms": r.budget_ms},
        "reference": {"name": S.REFERENCE, "latency_ms": r.reference_ms, key: r.source_metric},
        "winner": r.winner.to_json() if r.winner else None, "folder": str(r.folder) if r.folder else None,
        "seconds": r.seconds, "metric": key, "candidates": [c.to_json() for c in r.candidates], "log": r.log})


def _plot(out: Path, r: BudgetResult, key: str, max_drop: float | None) -> Path | None:
    """``frontier.png``: accuracy against measured latency for every trained candidate, the budget drawn."""
    from slimcv._io import atomic_write
    from slimcv.report.plots import search_figure

    rows = [{"key": c.key, "kind": c.kind, "label": c.label, "latency_ms": c.latency_ms, "metric": c.metric}
            for c in r.candidates]
    png = search_figure(rows, r.budget_ms, key, r.source_metric, r.winner.key if r.winner else None, max_drop)
    if png is None:
        return None
    return atomic_write(out / "frontier.png", lambda tmp: Path(tmp).write_bytes(png))


def _print(r: BudgetResult, key: str) -> None:
    rows = [(c.name, c.label, c.params / 1e6, c.macs / 1e6, c.latency_ms, c.speedup, "yes" if c.meets else "",
             c.metric) for c in sorted(r.candidates, key=lambda c: c.latency_ms)]
    print_table(f"candidates (budget {r.budget_ms:.2f} ms)", ["candidate", "runtime", "params (M)", "MMACs", "ms",
                "speed-up", "meets", key], rows)
    if r.winner is None:
        print("No candidate meets the latency budget with a measured accuracy: relax the target or give more "
              "time.")
    else:
        w = r.winner
        drop = f", {w.metric - r.source_metric:+.2f} pt against the source" if r.source_metric is not None else ""
        print(f"Chosen: {w.name} in {w.label}, {w.latency_ms:.2f} ms ({w.speedup:.2f}x the source in ORT FP32), "
              f"{key} {w.metric:.2f}{drop}; folder {r.folder}. Search took {r.seconds / 60:.1f} min.")
