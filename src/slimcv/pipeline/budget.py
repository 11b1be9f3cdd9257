"""Compress to a latency budget within a time budget: measure every candidate first, rank those that meet the
budget by a short distillation run, spend the remaining time on the best, return the most accurate one.

1. The source and every candidate (pruned copies, layer-uniform and sensitivity-guided; efficient students) are
   timed untrained, per runtime, in one interleaved run with the source's INT8 file; then the other INT8 files
   that can change the answer, in a second (``search``).
2. Each candidate that meets the latency budget gets a proxy run: ``proxy_epochs`` of KD from the source
   (students from scratch; pruned copies keep the source's weights and fine-tune with KD).
3. The best ``finalists`` by proxy metric go through successive halving: each round trains those left on from
   their last runs for twice the epochs of the round before and keeps the better half, dropping any that stopped
   learning; the last one left trains on with the rest of the time (nothing is built or pruned again). With a
   ``frontier_share``, while no proxy is within ``max_drop``, that share of the time first trains a pruned copy
   that misses the budget but runs faster than the source, so that a miss still names a trained point within it.
4. Networks whose NNCF INT8 file meets the budget are quantized once trained (the source at once: it needs no
   training) and scored as deployed.
5. The most accurate candidate that meets the budget wins; the source itself counts, on any runtime or
   precision where it already meets it.
``compress_search.json`` lists every candidate with its latency, proxy and final metric.
"""
from __future__ import annotations

import functools
import math
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimcv._console import console, print_table
from slimcv._io import atomic_write_json
from slimcv.errors import SlimcvError
from slimcv.pipeline import search
from slimcv.run_folder import METRICS_JSONL, SEARCH_JSON, SEARCH_STATE, TEACHER_CACHE

KD = {"segmentation": {"name": "kd", "weight": 1.0, "temperature": 1.0},
      "classification": {"name": "kd", "weight": 1.0, "temperature": 4.0},
      "detection": {"name": "kd", "weight": 1.0}}  # a detector's kd: its head at matched locations




@dataclass
class BudgetResult:
    """The winner (None when nothing meets the latency budget within ``max_drop``), every candidate, and the time
    spent. ``closest`` is the winner, or on a miss the most accurate candidate that meets the latency budget."""

    winner: search.Candidate | None
    folder: Path | None  # the winner's (or on a miss the closest candidate's) model or quantize folder
    candidates: list[search.Candidate]
    reference_ms: float
    budget_ms: float
    seconds: float
    source_metric: float | None = None
    log: list[dict[str, Any]] = field(default_factory=list)
    folders: dict[str, Path] = field(default_factory=dict)  # "<name>/int8" -> its quantize folder
    closest: search.Candidate | None = None
    max_drop: float | None = None
    source_best: search.Candidate | None = None  # the source in FP32 at its own fastest runtime
    reused: list[str] = field(default_factory=list)  # steps a restarted search took from the earlier run
    train_device: str = "cpu"  # where the candidates trained (latency is always measured on the CPU)
    budget_minutes: float | None = None
    phases: dict[str, float] = field(default_factory=dict)  # seconds spent in each phase of the search

    @property
    def met(self) -> bool:
        return self.winner is not None


class _State:
    """``search_state.json``: the measured candidates and each finished step, written after every step, so a search
    killed at any point and started again redoes only the step it was in."""

    def __init__(self, out: Path, key: dict[str, Any] | None) -> None:
        from slimcv.artifact import read_json

        self.path, self.key, self.start = out / SEARCH_STATE, key, time.perf_counter()
        old = read_json(self.path) if self.path.is_file() else None
        if key is not None and old and old.get("key") == key:
            self.data = old
        else:
            if old is not None:  # an earlier search of something else: its runs are ours to replace
                for sub in ("proxy", "final", "frontier", "frontier_on", "int8", TEACHER_CACHE):
                    shutil.rmtree(out / sub, ignore_errors=True)
            self.data = {"key": key, "spent_seconds": 0.0, "candidates": None, "reference_ms": None, "done": {}}
        self.spent_before = float(self.data.get("spent_seconds", 0.0))
        self.save()

    def done(self, step: str) -> dict[str, Any] | None:
        return self.data["done"].get(step)

    def record(self, step: str, entry: dict[str, Any]) -> None:
        self.data["done"][step] = entry
        self.save()

    def save(self) -> None:
        self.data["spent_seconds"] = self.spent_before + time.perf_counter() - self.start
        atomic_write_json(self.path, self.data)


def _search_key(folder: Path, data: Any, target_latency_ms, target_speedup, space, proxy_epochs: int,
                latency_runs: int) -> dict[str, Any] | None:
    """What makes two searches the same one (None when the data cannot be written down: no reuse)."""
    import json

    from slimcv.config import DataConfig

    if isinstance(data, DataConfig):
        data = data.model_dump(mode="json")
    try:
        json.dumps(data)
    except (TypeError, ValueError):
        return None
    return {"source": str(folder.resolve()), "data": data, "target_latency_ms": target_latency_ms,
            "target_speedup": target_speedup, "space": space.model_dump(mode="json") if space else None,
            "proxy_epochs": proxy_epochs, "latency_runs": latency_runs}


def compress_to_budget(source: str | Path, data: Any, *, target_latency_ms: float | None = None,
                       target_speedup: float | None = None, budget_minutes: float = 60.0, proxy_epochs: int = 1,
                       finalists: int = 4, finalist_gap: float | None = 5.0, space: search.SearchSpace | None = None,
                       out_dir: str | Path = "runs/compress",
                       latency_runs: int = 15, threads: int | None = 1, progress: bool = True,
                       max_drop: float | None = None, device: str = "auto", frontier_share: float = 0.0
                       ) -> BudgetResult:
    """Search the candidates of ``source`` (a model folder) for the most accurate one that meets the latency
    target on this machine and loses at most ``max_drop`` points, spending at most ``budget_minutes`` (the last run
    may overrun by one epoch). A candidate whose proxy trails the best one's by more than ``finalist_gap`` points
    is not a finalist, so the time goes to those that can still win; while the best proxy is beyond ``max_drop``,
    ``frontier_share`` of the time left trains a slower pruned copy as the frontier's point within it
    (``frontier_candidate``). Started again on the same ``out_dir``, it reuses every candidate measured or trained
    before."""
    from slimcv._io import check_owned
    from slimcv.artifact import metric_key
    from slimcv.data import as_bundle

    start = time.perf_counter()
    folder = Path(source)
    if not folder.is_dir():
        raise SlimcvError(f"{folder} is not a model folder; train or import the model first (slimcv train, or "
                          "slimcv compress with --weights).")
    out = Path(out_dir)
    check_owned(out, SEARCH_STATE)
    bundle = as_bundle(data)
    state = _State(out, _search_key(folder, data, target_latency_ms, target_speedup, space, proxy_epochs,
                                    latency_runs))
    deadline = start + budget_minutes * 60 - state.spent_before
    budget_of = functools.partial(search.within_budget, [], target_latency_ms=target_latency_ms,
                                  target_speedup=target_speedup)  # the reference's latency -> the budget
    candidates, reference = _measured_or_reused(state, folder, bundle, space, out, latency_runs, threads, progress,
                                                deadline, budget_minutes, budget_of)
    budget = search.within_budget(candidates, reference, target_latency_ms=target_latency_ms,
                                  target_speedup=target_speedup)
    key = metric_key(bundle.task)
    source_metric = _source_metric(folder, bundle, key)
    for c in candidates:
        if c.kind == "source" and c.precision == "fp32":
            c.metric = source_metric
    # the phases' times live in the search's state, so a resumed search adds to what the earlier run spent
    result = BudgetResult(None, None, candidates, reference, budget, 0.0, source_metric, max_drop=max_drop,
                          budget_minutes=budget_minutes, phases=state.data.setdefault("phases", {}))
    result.phases["measure"] = result.phases.get("measure", 0.0) + time.perf_counter() - start
    result.source_best = min((c for c in candidates if c.kind == "source" and c.precision == "fp32"),
                             key=lambda c: c.latency_ms)
    folders: dict[str, Path] = {"source": folder}
    with _timed(result, "source_int8"):
        _score_int8(candidates, "source", folder, out, bundle, threads, key, result, state)
    int8_seconds = result.phases["source_int8"]  # what quantizing a trained network costs, kept free at the end
    trainable = [c for c in search.best_runtime_each(candidates) if c.kind != "source"]
    sb = result.source_best
    console.print(f"reference: the source in ONNX Runtime FP32, {reference:.2f} ms (at its fastest, {sb.label}, "
                  f"{sb.latency_ms:.2f} ms); budget {budget:.2f} ms; {len(trainable)} of "
                  f"{len({c.name for c in candidates}) - 1} candidates meet it", highlight=False, soft_wrap=True)
    device = training_device(device)
    result.train_device = device
    if device != "cpu":
        console.print(f"compress: candidates train on {device.upper()}; their latency is measured on this machine's "
                      "CPU, where they will run", highlight=False, soft_wrap=True)
    common = dict(bundle=bundle, folder=folder, task=bundle.task, progress=progress, threads=threads, device=device,
                  source_macs=next(c.macs for c in candidates if c.kind == "source"))
    with _timed(result, "proxies"):
        _proxy_round(trainable, deadline, proxy_epochs, out, folders, result, common, state)
    ranked = choose_finalists(trainable, finalists, finalist_gap)
    frontier = frontier_candidate(candidates, trainable, source_metric, max_drop) if frontier_share else None
    _train_rest(ranked, trainable, frontier, frontier_share, int8_seconds, deadline, out, folders, result, common,
                state)
    with _timed(result, "int8"):
        _score_trained_int8(trainable + ([frontier] if frontier is not None else []), candidates, folders, out,
                            bundle, threads, key, result, state)
    _choose(result, folders)
    state.save()
    result.seconds = state.data["spent_seconds"]  # an earlier run of a resumed search included
    _write(out, result, target_latency_ms, target_speedup, key)
    _plot(out, result, key, max_drop)
    _print(result, key)
    return result


def _train_rest(ranked: list[search.Candidate], trainable: list[search.Candidate], frontier: search.Candidate | None,
                frontier_share: float, int8_seconds: float, deadline: float, out: Path, folders: dict[str, Path],
                result: BudgetResult, common: dict[str, Any], state: _State) -> None:
    """The time after the proxies: the frontier point first with its share (all of it when no finalist is left),
    then the final round with the rest; the time the INT8 files will take at the end is kept free."""
    candidates = result.candidates
    if frontier is not None:
        with _timed(result, "frontier"):
            reserve = int8_seconds * _int8_files_to_make(candidates, trainable, ranked, frontier, result)
            share = (frontier_share if ranked else 1.0) * (deadline - reserve - time.perf_counter())
            _frontier_run(frontier, share, deadline, out, folders, result, common, state)
    with _timed(result, "final_round"):
        reserve = int8_seconds * _int8_files_to_make(candidates, trainable, ranked, frontier, result)
        _final_round(ranked, deadline - reserve, out, folders, result, common, state)


def _int8_files_to_make(candidates: list[search.Candidate], trainable: list[search.Candidate],
                        ranked: list[search.Candidate], frontier: search.Candidate | None, result: BudgetResult) -> int:
    """How many INT8 files the search will quantize and score once training ends (their time is kept free): those
    of the networks that can still win, and the frontier point's where INT8 is its fastest (before it trains, or
    once trained unless hopeless)."""
    source_metric, max_drop = result.source_metric, result.max_drop
    n = sum(any(o.name == c.name and o.precision == "int8" and o.meets for o in candidates)
            for c in trainable if c.metric is not None
            and (c in ranked or not _hopeless(c.metric, source_metric, max_drop)))
    if frontier is not None and frontier.precision == "int8":
        trained = any(e["stage"] == "frontier" and e["candidate"] == frontier.name for e in result.log)
        n += not trained or not _hopeless(frontier.metric, source_metric, max_drop)
    return n


@contextmanager
def _timed(result: BudgetResult, phase: str) -> Iterator[None]:
    """Add the wall time of the enclosed phase to ``result.phases``."""
    t = time.perf_counter()
    try:
        yield
    finally:
        result.phases[phase] = result.phases.get(phase, 0.0) + time.perf_counter() - t


def _score_trained_int8(trainable: list[search.Candidate], candidates: list[search.Candidate],
                        folders: dict[str, Path], out: Path, bundle, threads: int | None, key: str,
                        result: BudgetResult, state: _State) -> None:
    """Give every runtime of a trained network its FP32 metric, and score the INT8 files of those that can win."""
    source_metric, max_drop = result.source_metric, result.max_drop
    for c in trainable:  # every runtime of a trained network scores as it trained; its INT8 file once quantized
        if c.metric is None:
            continue
        metric = c.metric  # the trained FP32 weights' (c may be the INT8 row, cleared below)
        for other in candidates:  # the FP32 weights' metric; an INT8 file scores only once it is evaluated
            if other.name == c.name:
                other.metric = metric if other.precision == "fp32" else None
        if _hopeless(metric, source_metric, max_drop):  # its INT8 file would score no better: time saved
            c.notes.append("INT8 not tried: the FP32 network is already too far below the source")
            continue
        _score_int8(candidates, c.name, folders[c.name], out, bundle, threads, key, result, state)


def frontier_candidate(candidates: list[search.Candidate], trainable: list[search.Candidate],
                       source_metric: float | None, max_drop: float | None) -> search.Candidate | None:
    """A pruned copy that misses the budget but runs at least ``search.FRONTIER_GAIN`` times faster than the source at
    its fastest (any runtime or precision), the mildest such (the likeliest to come within ``max_drop``), at its
    fastest runtime: trained beside the finalists, so that a search that misses its target still names a trained
    candidate faster than the source within ``max_drop``. None without ``max_drop`` or the source's metric, when
    a proxy is already within ``max_drop`` (the target looks reachable), or when no copy qualifies."""
    best = max((c.metric for c in trainable if c.metric is not None), default=None)
    if max_drop is None or source_metric is None or (best is not None and source_metric - best <= max_drop):
        return None
    source = search.fastest_each(c for c in candidates if c.kind == "source").get("source")
    meeting = {c.name for c in trainable}
    copies = search.fastest_each(c for c in candidates if c.kind == "pruned" and c.name not in meeting)
    eligible = [c for c in copies.values()
                if source and source.latency_ms / c.latency_ms >= search.FRONTIER_GAIN]
    return max(eligible, key=lambda c: (c.macs, -c.latency_ms), default=None)


def _frontier_run(c: search.Candidate, seconds: float, deadline: float, out: Path, folders: dict[str, Path],
                  result: BudgetResult, common: dict[str, Any], state: _State) -> None:
    """Train the frontier's copy ``c`` with KD in about ``seconds``: one epoch first, which measures its pace, then
    on from it for the epochs that fit in the rest (each step taken from an earlier run of this search if it did)."""
    why = "trained although it misses the latency budget, so that a miss still names a trained point within --max-drop"
    end = time.perf_counter() + seconds
    if not _reuse(state, "frontier", c, folders, result, "frontier point"):
        guess = _first_epoch_guess(c, result)  # None without a proxy to go by: nothing else trains then
        if seconds <= 0 or guess is not None and guess > seconds:
            c.notes.append(f"frontier point: no time to train it ({max(seconds, 0):.0f} s for it; one epoch and its "
                           f"set-up take about {guess or 0:.0f} s)")
            return
        _phase(f"frontier point: {c.name} ({c.label}, {c.speedup:.2f}x); {why}", deadline)
        t = time.perf_counter()
        c.metric = _train(c, out / "frontier" / c.name, 1, **common)
        folders[c.name] = out / "frontier" / c.name
        total = time.perf_counter() - t
        per_epoch = _epoch_seconds(folders[c.name]) or total
        entry = {"candidate": c.name, "stage": "frontier", "int8": c.precision == "int8", "epochs": 1,
                 "metric": c.metric, "seconds_per_epoch": per_epoch, "setup_seconds": max(0.0, total - per_epoch),
                 "folder": str(folders[c.name])}
        result.log.append(entry)
        state.record(f"frontier/{c.name}", entry)
    more = _epochs_within(c, end - time.perf_counter(), result, folders)
    if more >= 1 or state.done(f"frontier_on/{c.name}"):
        _train_on(c, "frontier_on", max(more, 1), "frontier point", deadline, out, folders, result, common, state)
    c.notes.append(f"frontier point: {why}")


def _first_epoch_guess(c: search.Candidate, result: BudgetResult) -> float | None:
    """Seconds for one epoch of ``c`` and its set-up: a pruned copy's proxy (else any proxy) nearest it in MACs,
    its epoch time scaled in proportion to the MACs; None without a proxy."""
    macs = {x.name: x.macs for x in result.candidates}
    kinds = {x.name: x.kind for x in result.candidates}
    proxies = [r for r in result.log if r["stage"] == "proxy" and macs.get(r["candidate"])]
    proxies = [r for r in proxies if kinds.get(r["candidate"]) == "pruned"] or proxies  # set-up includes pruning
    if not proxies:
        return None
    near = min(proxies, key=lambda r: abs(math.log(macs[r["candidate"]] / max(c.macs, 1))))
    return near["setup_seconds"] + near["seconds_per_epoch"] * c.macs / macs[near["candidate"]]


def _measured_or_reused(state: _State, folder: Path, bundle, space, out: Path, latency_runs: int,
                        threads: int | None, progress: bool, deadline: float, budget_minutes: float,
                        budget_of: Callable[[float], float]) -> tuple[list[search.Candidate], float]:
    """The candidates and the reference latency: as an earlier run of this search measured them, else measured
    now (and recorded); says so when the measurement alone used up the budget."""
    if state.data["candidates"] is not None:
        _phase(f"reusing the {len(state.data['candidates'])} candidates measured by the earlier run of this search",
               deadline)
        return [search.Candidate(**c) for c in state.data["candidates"]], float(state.data["reference_ms"])
    start = time.perf_counter()
    candidates, reference = _measured_candidates(folder, bundle, space, out, latency_runs, threads, progress,
                                                 budget_of)
    state.data.update(candidates=[c.to_json() for c in candidates], reference_ms=reference)
    state.save()
    if time.perf_counter() > deadline:
        took = time.perf_counter() - start
        console.print(f"[yellow]compress: measuring the candidates alone took {took / 60:.1f} min, more than the "
                      f"{budget_minutes:g} min budget, so none is trained; give a budget of at least "
                      f"{2 * took / 60:.0f} min.[/]", highlight=False, soft_wrap=True)
    return candidates, reference


HOPELESS_MARGIN = 1.0  # points beyond max_drop: an INT8 file of a network that far below the source is not tried


def training_device(device: str = "auto") -> str:
    """Where candidates train: a GPU when one is present (most users train there), else the CPU. Latency is always
    measured on the CPU runtimes, where the model will be deployed."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _hopeless(metric: float | None, source_metric: float | None, max_drop: float | None) -> bool:
    """Whether a trained network scores so far below the source that its INT8 file cannot be within ``max_drop``."""
    if metric is None or source_metric is None or max_drop is None:
        return False
    return source_metric - metric > max_drop + HOPELESS_MARGIN


def _source_metric(folder: Path, bundle, key: str) -> float | None:
    """The source's recorded validation metric; near chance accuracy is said, as nothing can be judged then."""
    from slimcv.artifact import read_summary

    metric = (read_summary(folder) or {}).get("metrics", {}).get(key)
    detection = bundle.task == "detection"
    chance = 1.0 if detection else 100.0 / max(bundle.num_classes, 1)
    if metric is not None and metric <= 1.5 * chance:
        why = ("it finds almost no objects" if detection else
               f"near chance for {bundle.num_classes} classes ({chance:.1f})")
        console.print(f"[yellow]compress: the source scores {key} {metric:.2f}, {why}: what compressing it costs "
                      "cannot be told; train it first.[/]", highlight=False, soft_wrap=True)
    return metric


def _proxy_round(trainable: list[search.Candidate], deadline: float, proxy_epochs: int, out: Path,
                 folders: dict[str, Path], result: BudgetResult, common: dict[str, Any], state: _State) -> None:
    """A short KD run of each candidate that meets the budget, the largest (most capable) first, while time lasts."""
    for i, c in enumerate(sorted(trainable, key=lambda c: -c.macs)):
        if _reuse(state, "proxy", c, folders, result, f"proxy: {proxy_epochs} epoch(s)"):
            continue
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
        entry = {"candidate": c.name, "stage": "proxy", "epochs": proxy_epochs, "metric": c.metric,
                 "seconds_per_epoch": per_epoch, "setup_seconds": setup, "folder": str(folders[c.name])}
        result.log.append(entry)
        state.record(f"proxy/{c.name}", entry)
        c.notes.append(f"proxy: {proxy_epochs} epoch(s), {per_epoch:.1f} s each")


def _choose(result: BudgetResult, folders: dict[str, Path]) -> None:
    """The one selection rule: the most accurate candidate that meets the latency budget and loses at most
    ``max_drop`` points (the faster on a tie); on a miss the most accurate that meets the latency is the closest."""
    meeting = [c for c in result.candidates if c.meets and c.metric is not None]
    base, limit = result.source_metric, result.max_drop
    allowed = [c for c in meeting if base is None or limit is None or base - c.metric <= limit + 1e-9]
    rank = lambda c: (c.metric, -c.latency_ms)  # noqa: E731
    result.winner = max(allowed, key=rank) if allowed else None
    result.closest = result.winner or (max(meeting, key=rank) if meeting else None)
    c = result.closest
    if c is not None:
        result.folder = result.folders[f"{c.name}/int8"] if c.precision == "int8" else folders[c.name]


def choose_finalists(trained: list[search.Candidate], n: int, gap: float | None) -> list[search.Candidate]:
    """The ``n`` best candidates by proxy metric, less those more than ``gap`` points behind the best (noted)."""
    ranked = sorted((c for c in trained if c.metric is not None), key=lambda c: -c.metric)[:n]
    if not ranked or gap is None:
        return ranked
    lead = ranked[0].metric
    for c in ranked[1:]:
        if lead - c.metric > gap:
            c.notes.append(f"not a finalist: its proxy trailed the best by {lead - c.metric:.1f} pt")
    return [c for c in ranked if lead - c.metric <= gap]


def _measured_candidates(folder: Path, bundle, space: search.SearchSpace | None, out: Path, latency_runs: int,
                         threads: int | None, progress: bool, budget_of: Callable[[float], float]
                         ) -> tuple[list[search.Candidate], float]:
    """Every candidate of the source in ``folder``, timed untrained (FP32 first, then the INT8 files that can
    change the answer), and the reference latency (the source in ONNX Runtime FP32)."""
    from slimcv.artifact import load_run_model
    from slimcv.data import spread

    model, _ = load_run_model(folder)
    example = bundle.val[0][0][None]
    _phase("measuring the candidates: sensitivity of each layer, then every network timed untrained", None)
    space = space or search.SearchSpace(students=search.default_students(bundle.task, tuple(example.shape[-2:])))
    layer_ratios = None
    if space.sensitivity_drops:  # each layer pruned alone, scored on a few validation batches
        from slimcv.prune.prune import sensitivity_analysis

        sens = sensitivity_analysis(model, example, bundle, ratios=space.sensitivity_ratios, out_dir=out,
                                    progress=progress)
        layer_ratios = search.sensitivity_candidates(sens, space.sensitivity_drops)
    cands_nets = search.enumerate_candidates(model, example, bundle.num_classes, bundle.task, space, layer_ratios)
    calibration = [bundle.train[i][0] for i in spread(8, len(bundle.train))]
    timed, reference = search.measure_fp32_first(cands_nets, example, budget_of, runs=latency_runs, threads=threads,
                                                 calibration=calibration, int8_always=space.int8_always)
    return [c for c, _ in timed], reference


def _reuse(state: _State, stage: str, c: search.Candidate, folders: dict[str, Path], result: BudgetResult,
           what: str) -> bool:
    """Take a training step an earlier run of this search finished (its metric and folder); False when none did."""
    earlier = state.done(f"{stage}/{c.name}")
    if earlier is None:
        return False
    c.metric, folders[c.name] = earlier["metric"], Path(earlier["folder"])
    result.log.append(earlier)
    result.reused.append(f"{stage}/{c.name}")
    c.notes.append(f"{what}: {earlier['epochs']} epoch(s), reused from the earlier run")
    return True


def _final_round(ranked: list[search.Candidate], deadline: float, out: Path,
                 folders: dict[str, Path], result: BudgetResult, common: dict[str, Any], state: _State) -> None:
    """Successive halving over the finalists, then the leader alone: each round trains every finalist left on
    from its last run, for twice the epochs of the round before as far as half the time left allows, and keeps the
    better half; a finalist whose metric did not rise in its round is not learning and is dropped too (never the
    best). The last one left trains on with the rest of the time before ``deadline``."""
    alive, epochs, rnd = list(ranked), 1, 0
    while len(alive) > 1:
        rnd += 1
        epochs *= 2
        per_run = (deadline - time.perf_counter()) / 2 / len(alive)  # half the time left: the rest is the leader's
        fit_in = min(_epochs_within(c, per_run, result, folders) for c in alive)
        if min(epochs, fit_in) < 1:
            break
        epochs = min(epochs, fit_in)
        before = {c.name: c.metric for c in alive}
        for i, c in enumerate(alive):
            _train_on(c, f"round{rnd}", epochs, f"round {rnd}, {i + 1}/{len(alive)}", deadline, out, folders, result,
                      common, state)
        alive = _halved(alive, before, rnd)
    if alive:
        leader = alive[0]
        n = _epochs_within(leader, deadline - time.perf_counter(), result, folders)
        if n < 1 and not state.done(f"final/{leader.name}"):
            leader.notes.append("kept its last run: no time to train it further")
            return
        _train_on(leader, "final", n, "final", deadline, out, folders, result, common, state)


def _epochs_within(c: search.Candidate, seconds: float, result: BudgetResult, folders: dict[str, Path]) -> int:
    """How many epochs of ``c`` fit in ``seconds``: its first run's set-up time (its proxy's, or the frontier
    point's), and the epoch time of its latest run (a machine that got busier since is not planned at the old
    pace)."""
    proxy = next(r for r in result.log if r["candidate"] == c.name and r["stage"] in ("proxy", "frontier"))
    latest = _epoch_seconds(folders[c.name]) if c.name in folders else None
    return int((seconds - proxy["setup_seconds"]) / max(latest or proxy["seconds_per_epoch"], 1e-9))


def _halved(alive: list[search.Candidate], before: dict[str, float | None], rnd: int) -> list[search.Candidate]:
    """The better half of a round's finalists, less those whose metric did not rise (the best always stays)."""
    ranked = sorted(alive, key=lambda c: -(c.metric if c.metric is not None else float("-inf")))
    keep = [ranked[0]]
    for c in ranked[1:]:
        if before.get(c.name) is not None and c.metric is not None and c.metric <= before[c.name]:
            c.notes.append(f"dropped after round {rnd}: not learning ({before[c.name]:.2f} -> {c.metric:.2f})")
        elif len(keep) < -(-len(ranked) // 2):
            keep.append(c)
        else:
            c.notes.append(f"dropped after round {rnd}: in the lower half")
    return keep


def _train_on(c: search.Candidate, stage: str, epochs: int, what: str, deadline: float, out: Path,
              folders: dict[str, Path], result: BudgetResult, common: dict[str, Any], state: _State) -> None:
    """Train ``c`` on from its last run for ``epochs`` into ``out/stage/name`` (or take that step from an earlier
    run of this search) and record it."""
    if _reuse(state, stage, c, folders, result, stage):
        return
    _phase(f"{what}: {c.name}, {epochs} more epochs from its last run", deadline)
    metric = _train(c, out / stage / c.name, epochs, start=folders[c.name], **common)
    entry = {"candidate": c.name, "stage": stage, "epochs": epochs, "metric": metric, "folder": str(out / stage / c.name)}
    result.log.append(entry)
    state.record(f"{stage}/{c.name}", entry)
    c.notes.append(f"{stage}: {epochs} more epochs")
    c.metric = metric
    folders[c.name] = out / stage / c.name


def _phase(what: str, deadline: float | None) -> None:
    """One progress line per phase and candidate, with the time left (also when stdout is a log file)."""
    left = f" ({max(0.0, deadline - time.perf_counter()) / 60:.1f} min of the budget left)" if deadline else ""
    console.print(f"compress: {what}{left}", highlight=False, soft_wrap=True)


def _epoch_seconds(run_dir: Path) -> float | None:
    """Mean training-epoch time (evaluation included) recorded under ``run_dir``, or None."""
    from slimcv._io import read_jsonl

    times = [r["epoch_time_s"] for f in run_dir.rglob(METRICS_JSONL) for r in read_jsonl(f) if "epoch_time_s" in r]
    return sum(times) / len(times) if times else None


def _score_int8(candidates: list[search.Candidate], name: str, folder: Path, out: Path, bundle, threads: int | None,
                key: str, result: BudgetResult, state: _State) -> None:
    """Quantize the trained network ``name`` (in ``folder``) with NNCF and score its INT8 file in OpenVINO, when
    that candidate meets the budget (the source's always: it is the peer a CPU user would reach for; the frontier
    point's where INT8 is its fastest); the folder is recorded for the winner."""
    frontier = (state.done(f"frontier/{name}") or {}).get("int8", False)  # the frontier point, INT8 its fastest
    int8 = next((c for c in candidates if c.name == name and c.precision == "int8"
                 and (c.meets or name == "source" or frontier)), None)
    if int8 is None:
        return
    q_dir = out / "int8" / name
    ends = bool(int8.build.get("fp32_ends"))  # as timed: its first and last layers in FP32 where that met the budget
    earlier = state.done(f"int8/{name}")
    if earlier is not None and earlier.get("of") == str(folder) and earlier.get("fp32_ends", False) == ends:
        int8.metric = earlier["metric"]
        if int8.metric is not None:
            int8.notes.append(f"NNCF INT8 of {folder}, reused from the earlier run")
            result.folders[f"{name}/int8"] = q_dir
            result.log.append(earlier)
        result.reused.append(f"int8/{name}")
        return
    _phase(f"INT8: quantizing {name} with NNCF and scoring it as deployed", None)
    import slimcv

    _fresh(q_dir)
    q = slimcv.quantize(str(folder), data=bundle, out_dir=str(q_dir), calibration=(), nncf=True, eager=False,
                        latency_runs=1, threads=threads, progress=False, fp32_ends=ends)
    from slimcv.deploy.runtimes import OPENVINO
    from slimcv.quantize.quantize import NNCF_VARIANT, model_name

    row = next((m for m in q.models if m["name"] == model_name(NNCF_VARIANT, OPENVINO)), None)
    entry = {"candidate": name, "stage": "int8", "metric": None, "folder": str(q_dir), "of": str(folder),
             "fp32_ends": ends}
    if row is None:
        int8.notes.append("NNCF INT8 could not be built here")
        state.record(f"int8/{name}", entry)
        return
    int8.metric = entry["metric"] = row["metrics"][key]
    int8.notes.append(f"NNCF INT8 of {folder}" + (", its first and last layers in FP32" if ends else ""))
    result.log.append(entry)
    state.record(f"int8/{name}", entry)
    result.folders[f"{name}/int8"] = q_dir


def _fresh(run_dir: Path) -> None:
    """A step's folder, emptied of what a killed earlier run of this search left there (no finished step is
    recorded for it, so nothing in it is reused)."""
    if run_dir.exists():
        shutil.rmtree(run_dir)


def _train(c: search.Candidate, run_dir: Path, epochs: int, *, bundle, folder: Path, task: str, progress: bool,
           threads: int | None, source_macs: int, start: Path | None = None, device: str = "auto") -> float:
    """Train one candidate with KD from the source for ``epochs``; ``start``: go on from that earlier run of it
    (its proxy) instead of building it again. Returns its validation metric."""
    import slimcv
    from slimcv.artifact import find_weights, metric_key, read_run_config

    _fresh(run_dir)
    kd = KD[task]

    # the optimizer that trained the source trains its candidates (the default's learning rate was 5x too low for
    # a student from scratch on the demo's data: 12 mIoU after one epoch instead of 29)
    recorded = read_run_config(folder) or {}
    optim = {"optim": recorded["optim"]} if recorded.get("optim") else {}
    if c.kind == "pruned" and start is not None:  # the pruned network trains on; nothing is pruned again
        from slimcv.pipeline.finetune import FinetuneConfig, finetune

        cfg = FinetuneConfig(source=str(start), data=bundle.config, epochs=epochs, teacher=str(folder), losses=[kd],
                             out_dir=str(run_dir), progress=progress, tensorboard=False, threads=threads,
                             device=device, **optim, **_offline(task, run_dir))
        r = finetune(cfg, bundle)
        return r.best.get("value", r.metrics[metric_key(task)])
    if c.kind == "pruned":
        how = ({"layer_ratios": c.build["layer_ratios"]} if "layer_ratios" in c.build
               else {"remove": 1 - c.macs / source_macs, "target": "macs"})
        r = slimcv.prune(str(folder), data=bundle, **how, finetune_epochs=epochs, distill=[kd], out_dir=str(run_dir),
                         progress=progress, latency_runs=0, round_to=c.build.get("round_to", search.ROUND_TO),
                         threads=threads, device=device, **optim)
        return r.after["metrics"][metric_key(task)]

    build = {k: c.build[k] for k in ("model", "model_kwargs") if k in c.build}  # the network, not how it deploys
    if start is not None:
        build["weights"] = str(find_weights(start))
    elif c.build.get("inherit"):  # start from the source's blocks that the shallower network shares
        build["weights"] = str(_inherited(c, folder, run_dir, bundle.num_classes))
    # a detector student takes distill's default for detectors (the neck's features)
    losses = {} if task == "detection" else {"losses": [kd]}
    values = {**build, "teacher": str(folder), "epochs": epochs, **losses, "out_dir": str(run_dir), **optim,
              "progress": progress, "threads": threads, "tensorboard": False, "device": device,
              "class_weights": recorded.get("class_weights")}  # the source's loss
    values.update(_offline(task, run_dir))
    r = slimcv.distill(values, data=bundle)
    return r.train.best.get("value", r.train.metrics[metric_key(task)])


def _offline(task: str, run_dir: Path) -> dict[str, Any]:
    """Segmentation maps of the source are computed once and shared by every run of the search (the source's
    forward pass took 40% of a pruned U-Net's training step on the CPU)."""
    if task != "segmentation":
        return {}
    return {"mode": "offline", "cache": {"dir": str(run_dir.parent.parent / TEACHER_CACHE)}}


def _inherited(c: search.Candidate, folder: Path, run_dir: Path, num_classes: int) -> Path:
    """A weights file for student ``c`` holding the source's tensors it shares (``search.inherit_weights``)."""
    from slimcv._io import atomic_write_safetensors
    from slimcv.artifact import load_run_model
    from slimcv.models import create_model

    source, _ = load_run_model(folder)
    net = create_model(c.build["model"], num_classes, **c.build["model_kwargs"])
    search.inherit_weights(source, net)
    path = run_dir.parent / f"{c.name}.init.safetensors"
    atomic_write_safetensors({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    return path


def _write(out: Path, r: BudgetResult, target_latency_ms, target_speedup, key: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    sb = r.source_best
    atomic_write_json(out / SEARCH_JSON, {
        "target": {"latency_ms": target_latency_ms, "speedup": target_speedup, "budget_ms": r.budget_ms,
                   "max_drop": r.max_drop},
        "reference": {"name": search.REFERENCE, "latency_ms": r.reference_ms, key: r.source_metric},
        "source_best": {"runtime": sb.label, "latency_ms": sb.latency_ms} if sb else None,
        "met": r.met, "winner": r.winner.to_json() if r.winner else None,
        "closest": r.closest.to_json() if r.closest else None, "folder": str(r.folder) if r.folder else None,
        "seconds": r.seconds, "budget_minutes": r.budget_minutes, "metric": key, "reused": r.reused,
        "phases_seconds": {k: round(v, 1) for k, v in r.phases.items()}, "train_device": r.train_device,
        "latency_measured_on": "cpu",
        "candidates": [c.to_json() for c in r.candidates], "log": r.log})


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
    best_ms = r.source_best.latency_ms if r.source_best else None
    rows = [(c.name, c.label, c.params / 1e6, c.macs / 1e6, c.latency_ms, c.speedup,
             best_ms / c.latency_ms if best_ms and c.latency_ms else None, "yes" if c.meets else "", c.metric,
             None if c.metric is None or r.source_metric is None else c.metric - r.source_metric)
            for c in sorted(r.candidates, key=lambda c: c.latency_ms)]
    print_table(f"candidates (budget {r.budget_ms:.2f} ms; speed-ups against the source in ONNX Runtime FP32 and at "
                "its own fastest runtime)", ["candidate", "runtime", "params (M)", "MMACs", "ms", "x ORT FP32",
                                             "x its best", "meets", key, "change"], rows)
    drop = f" and --max-drop {r.max_drop:g}" if r.max_drop is not None else ""
    c = r.closest
    if c is None:
        print(f"Target missed: no candidate meets the latency budget of {r.budget_ms:.2f} ms with a measured "
              "accuracy; relax the target or give more time.")
        return
    change = f", {c.metric - r.source_metric:+.2f} pt against the source" if r.source_metric is not None else ""
    what = (f"{c.name} in {c.label}, {c.latency_ms:.2f} ms ({c.speedup:.2f}x the source in ORT FP32"
            + (f", {best_ms / c.latency_ms:.2f}x the source at its fastest" if best_ms else "")
            + f"), {key} {c.metric:.2f}{change}; folder {r.folder}")
    if r.met:
        print(f"Target met{drop}: {what}. {search_time(r)}.")
    else:
        print(f"Target missed: nothing meets the latency budget{drop}; the closest is {what}. Give more "
              f"--budget-minutes or relax the target. {search_time(r)}.")


PHASE_NAMES = {"measure": "measuring", "source_int8": "the source's INT8", "proxies": "proxies",
               "frontier": "frontier point", "final_round": "final round", "int8": "INT8 of the trained"}


def search_time(r: BudgetResult) -> str:
    """How long the search took, any overrun of its budget, and the minutes of each phase."""
    text = f"Search took {r.seconds / 60:.1f} min"
    over = r.seconds - r.budget_minutes * 60 if r.budget_minutes is not None else 0.0
    if over > 0:  # in seconds below a minute: not "0.0 min over"
        by = f"{over / 60:.1f} min" if over >= 60 else f"{over:.1f} s" if over < 10 else f"{over:.0f} s"
        text += f", {by} over its {r.budget_minutes:g} min budget"
    scale, unit = (60, "min") if r.seconds >= 120 else (1, "s")
    parts = [f"{PHASE_NAMES.get(k, k)} {v / scale:.1f}" for k, v in r.phases.items() if v / scale >= 0.05]
    return text + (f" ({', '.join(parts)} {unit})" if parts else "")
