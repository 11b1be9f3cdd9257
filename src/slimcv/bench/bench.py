"""`slimcv bench`: parameters, size, MACs, latency per runtime, throughput and peak memory of several models,
timed interleaved in one run so their ratios are fair on a noisy machine."""
from __future__ import annotations

import os
import platform
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from slimcv._console import console, print_table
from slimcv._io import atomic_write_json
from slimcv.bench.latency import Timing, eager_runner, ort_runner, time_interleaved
from slimcv.deploy.runtimes import EAGER, ORT, ort_session
from slimcv.bench.memory import METHOD as MEMORY_METHOD
from slimcv.bench.memory import peak_memory_mb
from slimcv.bench.sources import Source, resolve_sources
from slimcv.errors import SlimcvError

SCHEMA = "slimcv.bench/1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Latency(_Strict):
    """Per-call wall time at one batch size, in milliseconds."""

    median: float
    p90: float
    mean: float
    min: float
    runs: int


class RuntimeResult(_Strict):
    """One model in one runtime: latency at batch 1, throughput per batch size, peak memory."""

    runtime: str = Field(description="the runtime table's row label: eager, eager-bf16, ort-fp32, ort-int8, "
                         "openvino-fp32, openvino-int8, ...")
    latency_ms: Latency = Field(description="batch 1")
    throughput: dict[str, float] = Field(description="images per second, keyed by batch size")
    batch_latency_ms: dict[str, Latency] = Field(description="per-call latency, keyed by batch size")
    peak_memory_mb: float | None = Field(description="see settings.memory_method; null when not measured")
    speedup: float = Field(description="the first row's batch-1 median divided by this one's")


class ModelResult(_Strict):
    name: str
    source: str
    kind: str = Field(description="run, name, module or onnx")
    task: str | None
    input_shape: list[int] = Field(description="one sample (C, H, W); batches stack it")
    params: int | None
    macs: int | None = Field(description="multiply-accumulates of one sample; null for a bare .onnx file")
    flops: int | None = Field(description="2 x macs")
    file_bytes: int | None
    precision: str
    runtimes: list[RuntimeResult]
    box_selection_ms: float | None = Field(None, description="detectors: median time of the box selection beside "
                                           "the network (threshold, top-k, NMS in numpy) at predict's default "
                                           "score threshold, batch 1")


class Settings(_Strict):
    threads: int
    warmup: int
    runs: int = Field(description="timed calls at batch 1; larger batches get max(5, runs // 4)")
    batch_sizes: list[int]
    memory_method: str | None
    interleaved: bool = True


class BenchReport(_Strict):
    """The JSON `slimcv bench` writes (schema ``slimcv.bench/1``)."""

    schema_: str = Field(SCHEMA, alias="schema")
    created: str
    machine: dict[str, Any]
    settings: Settings
    models: list[ModelResult]
    notes: list[str] = Field(default_factory=list, description="what could not be measured, and why")
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def bench(sources: Sequence[Any], *, input_size: Sequence[int] | None = None, num_classes: int | None = None,
          runtimes: Sequence[str] | None = None, batch_sizes: Sequence[int] = (1, 8), warmup: int = 3, runs: int = 20,
          threads: int | None = None, memory: bool = True, out: str | Path | None = None,
          quiet: bool = False) -> BenchReport:
    """Measure every source (run folder, quantize folder, model name, .onnx file or nn.Module) in each runtime
    (default: every runtime of the table this machine can run on its CPU)."""
    from slimcv.deploy import runtimes as table

    if runtimes is None:
        runtimes = [r.name for r in table.available() if r.device == "cpu"]
    if not runtimes:
        raise SlimcvError(f"Give at least one runtime; choose from {', '.join(table.TABLE)}.")
    runtimes = [table.get(r).name for r in runtimes]  # one sentence for an unknown name
    if not batch_sizes or min(batch_sizes) < 1:
        raise SlimcvError(f"Batch sizes must be positive integers, got {list(batch_sizes)}.")
    size = _hw(input_size)
    threads = threads or torch.get_num_threads()
    batch_sizes = sorted({1, *batch_sizes})
    candidates = resolve_sources(list(sources), size, num_classes)
    with tempfile.TemporaryDirectory(prefix="slimcv-bench-") as tmp:
        notes: list[str] = []
        plan = _plan(candidates, runtimes, Path(tmp), notes)
        timings = {b: _time(plan, b, warmup, runs if b == 1 else max(5, runs // 4), threads, quiet, notes)
                   for b in batch_sizes}
        mem = {key: _memory(c, rt, path, threads) for key, (c, _label, path, rt) in plan.items()} if memory else {}
    report = _assemble(candidates, plan, timings, mem, threads, warmup, runs, batch_sizes, memory)
    report.notes = notes
    if out is not None:
        atomic_write_json(out, report.model_dump(mode="json", by_alias=True)).chmod(0o644)
    if not quiet:
        print_bench(report)
        for note in notes:
            console.print(f"note: {note}")
    return report


def _hw(size: Sequence[int] | int | None) -> tuple[int, int] | None:
    if size is None:
        return None
    size = [size] if isinstance(size, int) else list(size)
    if len(size) not in (1, 2) or min(size) < 1:
        raise SlimcvError(f"input_size takes one or two positive numbers (H W), got {size}.")
    return (size[0], size[-1])


def _plan(candidates: list[Source], runtimes: Sequence[str], tmp: Path, notes: list[str]) -> dict[str, tuple]:
    """(candidate, runtime, onnx path or None) per measured row, keyed 'name · runtime'."""
    from slimcv.deploy import runtimes as table

    plan: dict[str, tuple] = {}
    usable = []
    for name in runtimes:
        why = table.get(name).check()
        if why:
            notes.append(f"runtime {name} not measured: {why}")
        else:
            usable.append(table.get(name))
    exported: dict[int, Path] = {}
    for c in candidates:
        for rt in usable:
            if c.onnx is not None and rt.runs == "onnx" and table.pairs_with(rt, c.precision) and \
                    table.reads(rt, c.onnx):
                plan[f"{c.name} · {table.row_name(rt.name, c.precision)}"] = (c, table.row_name(rt.name, c.precision),
                                                                               c.onnx, rt.name)
            elif c.onnx is None and rt.runs == "module":
                plan[f"{c.name} · {rt.name}"] = (c, rt.name, None, rt.name)
            elif c.onnx is None and rt.runs == "onnx" and table.pairs_with(rt, "fp32"):
                try:
                    path = exported.get(id(c)) or exported.setdefault(id(c), _export(c, tmp))
                except SlimcvError as e:  # one model that does not export must not stop the others' measurement
                    notes.append(f"{c.name}: no {rt.name} rows, export failed: {e}")
                    continue
                plan[f"{c.name} · {table.row_name(rt.name, 'fp32')}"] = (c, table.row_name(rt.name, "fp32"), path,
                                                                          rt.name)
    for c in candidates:
        if not any(entry[0] is c for entry in plan.values()):
            notes.append(f"{c.name}: none of the runtimes {', '.join(runtimes)} runs it here (an OpenVINO IR runs in "
                         "openvino)" if c.onnx is not None and c.onnx.suffix == ".xml" else
                         f"{c.name}: none of the runtimes {', '.join(runtimes)} runs it here")
    if not plan:
        raise SlimcvError(f"No runtime in {list(runtimes)} can run these models here; add 'eager' or 'ort'.")
    return plan


def _export(c: Source, tmp: Path) -> Path:
    """The candidate as an FP32 ONNX file (dynamic batch, fixed H/W) through slimcv's exporter."""
    from slimcv.export.onnx import ExportConfig, to_onnx

    path = tmp / f"{len(list(tmp.iterdir()))}.onnx"
    c.model.eval()
    to_onnx(c.model, torch.randn(1, *c.input_shape), path, ExportConfig(), dynamic_hw=False)
    return path


def _time(plan: dict[str, tuple], batch: int, warmup: int, runs: int, threads: int, quiet: bool,
          notes: list[str]) -> dict[str, Timing]:
    from slimcv.deploy.deployed import deployed_runner

    runners = {}
    for key, (c, _label, path, runtime) in plan.items():
        if c.batch_dim not in (None, batch):
            continue  # an ONNX file exported for a fixed batch size
        x = torch.randn(batch, *c.input_shape, generator=torch.Generator().manual_seed(0))
        try:
            if runtime == EAGER:
                runners[key] = eager_runner(c.model, x)
            elif path is not None and runtime == ORT:
                runners[key] = ort_runner(ort_session(path, threads), x)
            else:
                runners[key] = deployed_runner(path if path is not None else c.model, x, runtime, threads)
        except SlimcvError as e:  # e.g. an ONNX Runtime QDQ file OpenVINO cannot compile: the other rows still count
            note = f"{c.name}: not measured in {runtime}: {e}"
            if note not in notes:
                notes.append(note)
    if not runners:
        return {}
    if not quiet:
        console.print(f"timing batch {batch}: {len(runners)} model/runtime pairs interleaved, {warmup} warm-up "
                      f"+ {runs} runs each, {threads} threads")
    return time_interleaved(runners, warmup=warmup, runs=runs, threads=threads)


def _memory(c: Source, runtime: str, path: Path | None, threads: int) -> float | None:
    from slimcv.deploy import runtimes as table

    if table.get(runtime).runs == "module" and not c.load:
        return None  # an in-memory module cannot be rebuilt in a fresh process
    spec = {"runtime": runtime, "source": str(path) if path else c.load["source"],
            "input_shape": [1, *c.input_shape], "threads": threads, "runs": 3,
            **({"num_classes": c.load["num_classes"]} if "num_classes" in c.load else {})}
    return peak_memory_mb(spec)


def _assemble(candidates, plan, timings, mem, threads, warmup, runs, batch_sizes, memory) -> BenchReport:
    first = next(iter(plan))
    base = timings[1][first].median_ms if first in timings[1] else None
    models = []
    for c in candidates:
        rows = []
        for key, (cand, runtime, _, _rt) in plan.items():
            if cand is not c or key not in timings[1]:
                continue
            per_batch = {str(b): _latency(t[key]) for b, t in timings.items() if key in t}
            rows.append(RuntimeResult(
                runtime=runtime, latency_ms=per_batch["1"], batch_latency_ms=per_batch,
                throughput={b: int(b) * 1e3 / lat.median for b, lat in per_batch.items()},
                peak_memory_mb=mem.get(key), speedup=(base / per_batch["1"].median) if base else 1.0))
        if not rows:  # no runtime asked for runs it (noted in _plan)
            continue
        models.append(ModelResult(name=c.name, source=c.source, kind=c.kind, task=c.task,
                                  input_shape=list(c.input_shape), params=c.params, macs=c.macs,
                                  flops=2 * c.macs if c.macs is not None else None, file_bytes=c.file_bytes,
                                  precision=c.precision, runtimes=rows, box_selection_ms=_selection_ms(c)))
    settings = Settings(threads=threads, warmup=warmup, runs=runs, batch_sizes=list(batch_sizes),
                        memory_method=MEMORY_METHOD if memory else None)
    return BenchReport(created=datetime.now(timezone.utc).isoformat(timespec="seconds"), machine=_machine(),
                       settings=settings, models=models)


def _selection_ms(c: Source, runs: int = 20) -> float | None:
    """A detector's box selection timed on its network's output for one image (None for other models)."""
    selection = getattr(c.model, "selection", None)
    if selection is None:
        return None
    import statistics
    import time

    from slimcv.deploy.boxes import PREDICT_THRESHOLD, select

    selection = selection.with_threshold(max(selection.score_threshold, PREDICT_THRESHOLD))  # as predict runs it
    with torch.inference_mode():
        dense = c.model.eval()(torch.rand(1, *c.input_shape, generator=torch.Generator().manual_seed(0)))[0].numpy()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        select(dense, selection)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _latency(t: Timing) -> Latency:
    return Latency(median=t.median_ms, p90=t.p90_ms, mean=t.mean_ms, min=t.min_ms, runs=t.runs)


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "processor": _cpu_name(), "cpus": os.cpu_count(),
                            "python": platform.python_version(), "torch": torch.__version__}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def print_bench(report: BenchReport) -> None:
    """The bench table: one row per model and runtime."""
    batches = [b for b in report.settings.batch_sizes if b != 1]
    rows = []
    for m in report.models:
        for r in m.runtimes:
            rows.append((m.name, r.runtime, _m(m.params, 1e6), _m(m.macs, 1e9), _m(m.file_bytes, 2**20),
                         r.latency_ms.median, r.latency_ms.p90, f"{r.speedup:.2f}x", r.throughput.get("1"),
                         *[r.throughput.get(str(b)) for b in batches], r.peak_memory_mb))
    s = report.settings
    first = f"{report.models[0].name} {report.models[0].runtimes[0].runtime}" if report.models else "the first row"
    print_table(f"bench: {s.threads} threads, {s.warmup} warm-up + {s.runs} runs, interleaved; latency at batch 1",
                ["model", "runtime", "params (M)", "GMACs", "size (MiB)", "median ms", "p90 ms",
                 f"speed-up vs {first}",
                 "img/s @1", *[f"img/s @{b}" for b in batches], "peak MiB"], rows)
    for m in report.models:
        if m.box_selection_ms is not None:  # the rows time the network; a prediction adds this
            console.print(f"{m.name}: box selection beside the network (threshold, top-k, NMS in numpy) "
                          f"{m.box_selection_ms:.2f} ms per image, on top of each row's latency")


def _m(v: float | None, unit: float) -> float | None:
    return None if v is None else v / unit
