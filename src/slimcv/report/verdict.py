"""The report's verdict: plain sentences, each computed from the run files, on what paid off and what did not.

Every statement says which numbers it rests on; a speed-up is stated only between latencies of one measurement
(the same interleaved run), never across runs made at different moments of a shared machine.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimcv.artifact import read_json
from slimcv.report.collect import Entry
from slimcv.run_folder import COMPRESS_JSON, PRUNE_JSON, QUANTIZE_JSON

MAX_DROP = 1.0  # points a candidate may lose against the baseline and still count as "within budget"


@dataclass(frozen=True)
class Statement:
    """One sentence of the verdict; ``kind`` is best, distill, prune, quantize or compress; ``good`` None: neutral."""

    kind: str
    text: str
    good: bool | None = None


def same_measurement_speedup(base: Entry, e: Entry) -> tuple[float, str] | None:
    """(base's fastest / e's fastest latency, e's fastest runtime) within one measurement, else None; the
    measurement that favours ``e`` most when several timed both."""
    best = None
    for src in {_source(v) for v in e.latency.values()}:
        theirs = [v["median"] for v in base.latency.values() if v.get("median") and _source(v) == src]
        mine = [(v["median"], rt) for rt, v in e.latency.items() if v.get("median") and _source(v) == src]
        if theirs and mine:
            ms, rt = min(mine)
            if best is None or min(theirs) / ms > best[0]:
                best = (min(theirs) / ms, rt)
    return best


def _source(v: dict[str, Any]) -> tuple[Any, Any]:
    return v.get("from"), v.get("threads")


def verdict(entries: list[Entry], base: Entry, max_drop: float = MAX_DROP, searches: Sequence[Path] = ()
            ) -> list[Statement]:
    """The statements: a compress search's outcome first (it answers the question the run was asked), then the
    best trade-off."""
    out = [s for s in (_compress(entries, searches), _best(entries, base, max_drop)) if s]
    out += distillation_statements(entries)
    out += [s for e in entries if e.kind == "prune" for s in [_prune(e, entries)] if s]
    seen: set[Path] = set()
    for e in entries:
        if e.kind == "quantize" and e.path not in seen:
            seen.add(e.path)
            out += _quantize(e.path)
    return out


def _best(entries: list[Entry], base: Entry, max_drop: float) -> Statement | None:
    if base.metric is None:
        return None
    label = base.metric_name or "metric"
    ok = [e for e in entries if e.metric is not None and e.metric >= base.metric - max_drop]
    timed = [(e, same_measurement_speedup(base, e)) for e in ok if e is not base]
    timed = [(e, s) for e, s in timed if s]
    if timed:
        e, (ratio, rt) = max(timed, key=lambda t: t[1][0])
        if ratio > 1.0:
            return Statement("best", f"Best trade-off within {max_drop:g} pt of {base.name}: {e.name}, "
                             f"{ratio:.2f}x faster ({rt}) at {label} {e.metric:.2f} against {base.metric:.2f}.", True)
        return Statement("best", f"Nothing within {max_drop:g} pt of {base.name} ran faster than it in the same "
                         "measurement: deploy the baseline as it is.", False)
    sized = [e for e in ok if e.file_bytes and base.file_bytes and e is not base]
    if sized:
        e = min(sized, key=lambda x: x.file_bytes)
        return Statement("best", f"Smallest within {max_drop:g} pt of {base.name}: {e.name}, "
                         f"{base.file_bytes / e.file_bytes:.1f}x smaller at {label} {e.metric:.2f} against "
                         f"{base.metric:.2f} (no latencies of one measurement to compare: pass --remeasure).", True)
    return Statement("best", f"No model is within {max_drop:g} pt of {base.name} ({label} {base.metric:.2f}) with a "
                     "latency or size to compare.", False)


def _arch(cfg: dict[str, Any] | None) -> tuple[Any, Any, Any] | None:
    if not cfg or not cfg.get("model"):
        return None
    data = cfg.get("data") or {}
    return cfg.get("model"), repr(sorted((cfg.get("model_kwargs") or {}).items())), data.get("spec")


def distillation_statements(entries: list[Entry]) -> list[Statement]:
    """Each distilled student against its control (the same student trained alone), where there is one."""
    return [s for e in entries if e.kind == "distill" for s in [_distill(e, entries)] if s]


def _distill(e: Entry, entries: list[Entry]) -> Statement | None:
    """The distilled student against the same architecture trained alone on the same data (the control)."""
    arch = _arch(e.config)
    control = next((c for c in entries if c.kind == "train" and arch and _arch(c.config) == arch), None)
    if control is None or e.metric is None or control.metric is None:
        return None
    gain = e.metric - control.metric
    label = e.metric_name or "metric"
    if gain > 0:
        return Statement("distill", f"Distillation helped: {e.name} reached {label} {e.metric:.2f}, "
                         f"{gain:+.2f} pt over the same student trained alone ({control.name}, {control.metric:.2f}).",
                         True)
    return Statement("distill", f"Distillation did not help: {e.name} reached {label} {e.metric:.2f}, {gain:+.2f} pt "
                     f"against the same student trained alone ({control.name}, {control.metric:.2f}); try another "
                     "temperature (T=1 for dense maps) or KD weight, or ship the student trained alone.", False)


def _prune(e: Entry, entries: list[Entry]) -> Statement | None:
    info = read_json(e.path / PRUNE_JSON) or {}
    before, after = info.get("before") or {}, info.get("after") or {}
    key = e.metric_name
    if not key or key not in before or key not in after:
        return None
    drop = after[key] - before[key]
    parts = []
    if before.get("macs") and after.get("macs"):
        parts.append(f"{before['macs'] / after['macs']:.2f}x fewer MACs")
    if before.get("params") and after.get("params"):
        parts.append(f"{before['params'] / after['params']:.2f}x fewer parameters")
    if before.get("latency_ms") and after.get("latency_ms"):  # both timed in the prune stage's one run
        parts.append(f"{before['latency_ms'] / after['latency_ms']:.2f}x lower eager latency")
    cost = f"{drop:+.2f} pt {key}"
    good = drop >= -MAX_DROP
    return Statement("prune", f"Pruning {'paid off' if good else 'cost too much'}: {e.name} has "
                     f"{', '.join(parts) or 'a smaller network'} for {cost} ({before[key]:.2f} -> {after[key]:.2f}).",
                     good)


def _quantize(folder: Path) -> list[Statement]:
    info = read_json(folder / QUANTIZE_JSON) or {}
    rec = info.get("recommendation") or {}
    models = {m["name"]: m for m in info.get("models") or []}
    if not rec.get("name") or rec["name"] not in models:
        return []
    chosen = models[rec["name"]]
    text = f"{folder.name} recommends {rec['name']} ({chosen.get('runtime')}, {chosen.get('precision')}): {rec['why']}."
    return [Statement("quantize", text[0].upper() + text[1:], chosen.get("precision") == "int8" or None)]


def _compress(entries: list[Entry], searches: Sequence[Path] = ()) -> Statement | None:
    """The outcome of a compress search reported on, else of the search an entry came from (a compress.json up to
    three folders above it)."""
    folders = [*searches, *(f for e in entries for f in list(e.path.parents)[:3])]
    for folder in dict.fromkeys(folders):
        info = read_json(folder / COMPRESS_JSON) if (folder / COMPRESS_JSON).is_file() else None
        if not info or not info.get("outcome"):
            continue
        o = info["outcome"]
        met = o.get("met")
        text = o.get("sentence") or (f"Target {info['target']['label']}: {'met' if met else 'not met'} "
                                     f"({o.get('summary', '')}).")
        return Statement("compress", text, bool(met))
    return None
