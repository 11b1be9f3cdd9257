"""Shared by camvid_chain.py and cifar10_chain.py: run a chain recipe, collect one results JSON, print the headline.

A chain recipe has the stages teacher (train), student (train), distill, prune (the KD student), quantize,
teacher_pruned (prune), bench (every model timed interleaved) and report. ``--teacher RUN`` reuses a trained
teacher run folder: the teacher stage is dropped and ``models.teacher`` points at the run.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimcv.artifact import is_model_folder, metric_key, read_summary

REPO = Path(__file__).resolve().parents[1]
SCHEMA = "slimcv.chain/1"
# result key -> recipe stage; the INT8 model comes from the quantize stage
MODELS = {"teacher": "teacher", "student_alone": "student", "student_kd": "distill", "student_kd_pruned": "prune",
          "student_kd_pruned_int8": "quantize", "teacher_pruned": "teacher_pruned"}


@dataclass(frozen=True)
class Target:
    """One headline target: a name, how to compute its value from the results, and the pass rule."""

    name: str
    value: Callable[[dict[str, Any]], float | None]
    threshold: float
    higher_is_better: bool
    unit: str = ""

    def check(self, results: dict[str, Any]) -> dict[str, Any]:
        """The target's row: value, threshold and met/missed (None when the value cannot be computed)."""
        try:
            value = self.value(results)
        except (KeyError, TypeError, ZeroDivisionError):
            value = None
        met = None if value is None else (value >= self.threshold if self.higher_is_better else value <= self.threshold)
        return {"target": self.name, "value": value, "threshold": self.threshold,
                "rule": (">=" if self.higher_is_better else "<=") + f" {self.threshold:g}{self.unit}", "met": met}


def parse_args(chain: str, doc: str, argv: Sequence[str] | None) -> argparse.Namespace:
    """The chain scripts' shared command line."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help=f"the GPU schedule (recipes/{chain}_chain_full.yaml)")
    p.add_argument("--recipe", type=Path, help="another chain recipe (default: the CPU or --full one)")
    p.add_argument("--teacher", type=Path, help="reuse this trained teacher run folder instead of training one")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override (repeatable)")
    p.add_argument("--out-dir", type=Path, help="run directory (default: the recipe's out_dir)")
    p.add_argument("--results", type=Path, help=f"results JSON (default benchmarks/results/{chain}_chain[_full].json)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for training and evaluation (default 2)")
    p.add_argument("--until", metavar="STAGE", help="stop after this stage (e.g. teacher_pruned: train everything now, "
                   "bench later on a quiet machine by re-running without --until)")
    return p.parse_args(argv)


def chain_recipe(path: Path, overrides: Sequence[str] = (), teacher: Path | None = None,
                 out_dir: Path | None = None):
    """Read and validate a chain recipe with overrides; ``teacher`` replaces the teacher stage by a trained run."""
    from slimcv.config import read_yaml
    from slimcv.errors import SlimcvError
    from slimcv.pipeline.recipe import apply_override, validate

    values = read_yaml(path)
    for item in overrides:
        apply_override(values, item, str(path))
    if teacher is not None:
        if not is_model_folder(teacher):
            raise SlimcvError(f"--teacher {teacher} is not a slimcv run folder (no model.json); give the folder a "
                              "`slimcv train` run wrote, e.g. runs/bench/camvid_teacher.")
        values["stages"] = [s for s in values["stages"] if s.get("name") != "teacher"]
        values["models"]["teacher"] = {"run": str(teacher)}
    if out_dir is not None:
        values["out_dir"] = str(out_dir)
    return validate(values, str(path))


def run_chain(chain: str, doc: str, targets: Sequence[Target], argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the chain recipe (resumable), write its results JSON, print the headline and any regressions."""
    import torch

    import slimcv
    from compare_results import compare, print_comparison

    args = parse_args(chain, doc, argv)
    torch.set_num_threads(args.threads)
    recipe_path = args.recipe or REPO / "recipes" / f"{chain}_chain_{'full' if args.full else 'cpu'}.yaml"
    recipe = chain_recipe(recipe_path, args.set, args.teacher, args.out_dir)
    t0 = time.perf_counter()
    run = slimcv.run(recipe, until=args.until)
    wall = time.perf_counter() - t0
    if args.until is not None:
        print(f"stopped after stage {args.until}; re-run without --until to finish (bench, report, results JSON)")
        return {}
    results = collect(run.run_dir, chain, recipe_path, run_wall_s=wall, teacher_run=args.teacher, full=args.full)
    results["command"] = " ".join(["python", *sys.argv]) if argv is None else " ".join(["python", chain, *argv])
    results["targets"] = [t.check(results) for t in targets]
    out = args.results or REPO / "benchmarks" / "results" / f"{chain}_chain{'_full' if args.full else ''}.json"
    previous = json.loads(out.read_text()) if out.is_file() else None
    from slimcv._io import atomic_write_json, atomic_write_text

    results["figures"] = copy_figures(run.run_dir / "report" / "figures", out.parent / "figures", out.stem)
    atomic_write_json(out, results)
    atomic_write_text(out.with_suffix(".md"), markdown(results))  # the tables docs/benchmarks.md quotes
    print_headline(results)
    if previous is not None:
        print_comparison(compare(previous, results), f"against the previous {out.name}")
    print(f"results: {out}")
    return results


def copy_figures(src: Path, dest: Path, prefix: str) -> list[str]:
    """The report's Pareto plot, per-class chart and first overlay, copied beside the results for the docs."""
    import shutil

    chosen = [src / "pareto.png", src / "per_class.png", *sorted(src.glob("overlay_*.png"))[:1]]
    copied = []
    for f in chosen:
        if f.is_file():
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest / f"{prefix}_{f.name}")
            copied.append(_rel(dest / f"{prefix}_{f.name}"))
    return copied


def collect(run_dir: Path, chain: str, recipe_path: Path, *, run_wall_s: float | None = None,
            teacher_run: Path | None = None, full: bool = False) -> dict[str, Any]:
    """One results dict from a finished chain run folder: per model metric, per class, size, MACs, latency, time."""
    run_dir = Path(run_dir)
    manifests = {p.parent.name: json.loads(p.read_text()) for p in run_dir.glob("*/manifest.json")}
    bench = json.loads((run_dir / "bench" / "bench.json").read_text())
    folders = {stage: run_dir / stage for stage in MODELS.values()}
    if teacher_run is not None:
        folders["teacher"] = Path(teacher_run)
    key = _metric_key(bench)
    models = {}
    for name, stage in MODELS.items():
        if stage == "quantize":
            entry = _int8_entry(run_dir / "quantize", bench, key)
        else:
            entry = _run_entry(folders[stage], bench, key)
        if entry is None:
            continue
        manifest = manifests.get(stage, {})
        entry["stage"] = stage
        entry["time_s"] = manifest.get("wall_time_s", entry.pop("time_s", None))
        entry["reused"] = stage == "teacher" and teacher_run is not None
        models[name] = entry
    return {"schema": SCHEMA, "chain": chain, "schedule": "full" if full else "cpu",
            "recipe": _rel(recipe_path), "run_dir": _rel(run_dir), "metric": key,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "hardware": _hardware(bench),
            "wall_time_s": run_wall_s, "stage_time_s": {s: m.get("wall_time_s") for s, m in manifests.items()},
            # the chain's own cost, summed over stages (the last invocation's wall time misses resumed parts)
            "stages_wall_time_s": sum(m.get("wall_time_s") or 0 for m in manifests.values()),
            "deployed": _deployed(run_dir / "quantize", bench, key), "models": models}


def _metric_key(bench: dict[str, Any]) -> str:
    tasks = {m.get("task") for m in bench["models"]}
    return metric_key("segmentation" if "segmentation" in tasks else "classification")


def _bench_row(bench: dict[str, Any], source: Path) -> dict[str, Any] | None:
    want = Path(source).resolve()
    return next((m for m in bench["models"] if Path(m["source"]).resolve() == want), None)


def _latency(row: dict[str, Any] | None) -> dict[str, float]:
    return {rt["runtime"]: rt["latency_ms"]["median"] for rt in (row or {}).get("runtimes", [])}


def _per_class(metrics: dict[str, Any]) -> dict[str, float]:
    return metrics.get("per_class_iou") or metrics.get("per_class_acc") or {}


def _run_entry(folder: Path, bench: dict[str, Any], key: str) -> dict[str, Any] | None:
    summary = read_summary(folder)
    if summary is None:
        return None
    metrics = summary.get("metrics", {})
    row = _bench_row(bench, folder)
    return {"source": _rel(folder), key: metrics.get(key), "per_class": _per_class(metrics),
            "params": (row or {}).get("params"), "macs": (row or {}).get("macs"),
            "file_bytes": (row or {}).get("file_bytes"), "latency_ms": _latency(row), "time_s": _train_time(folder)}


def _int8_entry(folder: Path, bench: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The best INT8 model of the quantize stage, scored and timed as deployed (ONNX Runtime)."""
    info_path = folder / "quantize.json"
    if not info_path.is_file():
        return None
    info = json.loads(info_path.read_text())
    int8 = [m for m in info["models"] if m.get("precision") == "int8"]
    if not int8:
        return None
    best = max(int8, key=lambda m: m["metrics"].get(key, float("-inf")))
    row = _bench_row(bench, _quantized_path(best["path"], folder))
    return {"source": _rel(_quantized_path(best["path"], folder)), "variant": best["name"],
            key: best["metrics"].get(key), "per_class": _per_class(best["metrics"]),
            "params": (row or {}).get("params"), "macs": (row or {}).get("macs"),
            "file_bytes": best.get("file_bytes"), "latency_ms": _latency(row)}


def _quantized_path(path: str, folder: Path) -> Path:
    """quantize.json paths are relative to where quantize ran: fall back to the file name inside the folder."""
    p = Path(path)
    return p if p.is_file() else folder / p.name


def _deployed(folder: Path, bench: dict[str, Any], key: str, max_drop: float = 0.5) -> dict[str, Any] | None:
    """The final student as deployed: of the quantize stage's models within ``max_drop`` of its FP32 metric,
    the one fastest in the chain's interleaved bench (the quantize stage's own recommendation was timed while
    it ran, possibly beside training jobs; it is kept as ``quantize_recommended``)."""
    info_path = folder / "quantize.json"
    if not info_path.is_file():
        return None
    info = json.loads(info_path.read_text())
    best_metric = max(m["metrics"].get(key, float("-inf")) for m in info["models"])
    rows = []
    for m in info["models"]:
        if m["metrics"].get(key, float("-inf")) < best_metric - max_drop:
            continue
        source = _quantized_path(m["path"], folder) if str(m["path"]).endswith(".onnx") else Path(m["path"])
        latency = _latency(_bench_row(bench, source))
        if latency:
            runtime, ms = min(latency.items(), key=lambda kv: kv[1])
            rows.append((ms, runtime, m))
    if not rows:
        return None
    ms, runtime, chosen = min(rows, key=lambda r: r[0])
    others = ", ".join(f"{m['name']} in {rt} {t:.2f} ms" for t, rt, m in sorted(rows, key=lambda r: r[0])[1:])
    return {"name": chosen["name"], key: chosen["metrics"].get(key), "latency_ms": ms, "runtime": runtime,
            "file_bytes": chosen.get("file_bytes"),
            "why": f"fastest in the interleaved bench within {max_drop} pt of the best {key}: {ms:.2f} ms in {runtime}"
                   + (f" (vs {others})" if others else ""),
            "quantize_recommended": info["recommendation"]}


def _train_time(folder: Path) -> float | None:
    """Sum of epoch times in a run's metrics.jsonl (for a reused run that has no manifest here)."""
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    times = [r["epoch_time_s"] for r in rows if isinstance(r.get("epoch_time_s"), (int, float))]
    return sum(times) if times else None


def _hardware(bench: dict[str, Any]) -> dict[str, Any]:
    import os

    import torch

    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    return {"machine": bench.get("machine"), "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "bench_threads": bench.get("settings", {}).get("threads"),
            "torch": torch.__version__, "onnxruntime": ort,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _rel(path: Path | str) -> str:
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


# ---------------------------------------------------------------- headline values


def fastest(results: dict[str, Any], model: str) -> float:
    """The model's fastest batch-1 latency over the runtimes it was timed in (ms)."""
    return min(results["models"][model]["latency_ms"].values())


def deployed_latency(results: dict[str, Any]) -> float:
    """The final student as deployed: the quantize stage's recommendation (INT8 only when it is faster here)."""
    dep = results.get("deployed") or {}
    return dep["latency_ms"] if dep.get("latency_ms") is not None else fastest(results, "student_kd_pruned_int8")


def deployed_metric(results: dict[str, Any]) -> float:
    dep = results.get("deployed") or {}
    key = results["metric"]
    return dep[key] if dep.get(key) is not None else results["models"]["student_kd_pruned_int8"][key]


def ratio(results: dict[str, Any], field: str, a: str, b: str) -> float:
    """results.models[a][field] / results.models[b][field]."""
    return results["models"][a][field] / results["models"][b][field]


def metric(results: dict[str, Any], model: str) -> float:
    return results["models"][model][results["metric"]]


def print_headline(results: dict[str, Any]) -> None:
    """The per-model table and the targets marked met / missed."""
    from slimcv._console import print_table

    key = results["metric"]
    rows = []
    for name, m in results["models"].items():
        lat = m["latency_ms"]
        rows.append((name, m.get(key), m.get("params"), (m.get("macs") or 0) / 1e6 or None,
                     (m.get("file_bytes") or 0) / 2**20 or None, lat.get("eager"), lat.get("ort-fp32"),
                     lat.get("ort-int8"), m.get("time_s")))
    print_table(f"{results['chain']} chain ({results['schedule']} schedule)",
                ["model", key, "params", "MMACs", "MiB", "eager ms", "ort-fp32 ms", "ort-int8 ms", "time (s)"], rows)
    target_rows = [(t["target"], t["value"], t["rule"], {True: "met", False: "MISSED", None: "n/a"}[t["met"]])
                   for t in results.get("targets", [])]
    if target_rows:
        print_table("targets (issue 10)", ["target", "value", "rule", "verdict"], target_rows)


LABELS = {"teacher": "teacher", "student_alone": "student alone", "student_kd": "student + KD",
          "student_kd_pruned": "student + KD, pruned", "student_kd_pruned_int8": "student + KD, pruned, INT8",
          "teacher_pruned": "teacher pruned directly"}


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown: the per-model table, per-class scores and the targets."""
    key = results["metric"]
    models = results["models"]

    def num(v: Any, fmt: str) -> str:
        return "—" if v is None else format(v, fmt)

    lines = [f"| model | {key} | params | MMACs | file (KiB) | eager ms | ORT FP32 ms | ORT INT8 ms | stage time (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, m in models.items():
        lat = m.get("latency_ms") or {}
        lines.append(f"| {LABELS.get(name, name)} | {num(m.get(key), '.2f')} | {num(m.get('params'), ',')} | "
                     f"{num((m.get('macs') or 0) / 1e6 or None, '.1f')} | "
                     f"{num((m.get('file_bytes') or 0) / 1024 or None, ',.0f')} | {num(lat.get('eager'), '.2f')} | "
                     f"{num(lat.get('ort-fp32'), '.2f')} | {num(lat.get('ort-int8'), '.2f')} | "
                     f"{num(m.get('time_s'), '.0f')} |")
    classes = list(next(iter(models.values())).get("per_class") or {})
    if classes:
        lines += ["", "| model | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
        for name, m in models.items():
            pc = m.get("per_class") or {}
            lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(num(pc.get(c), ".1f") for c in classes) + " |")
    dep = results.get("deployed") or {}
    if dep:
        lines += ["", "Deployed (the fastest of the quantize stage's models within 0.5 pt, in the bench): "
                      f"`{dep.get('name')}`, {key} {num(dep.get(key), '.2f')}, "
                      f"{num(dep.get('latency_ms'), '.2f')} ms: {dep.get('why')}"]
    lines += ["", "| target | value | rule | verdict |", "|---|---|---|---|"]
    for t in results.get("targets", []):
        verdict = {True: "met", False: "**missed**", None: "n/a"}[t["met"]]
        lines.append(f"| {t['target']} | {num(t['value'], '.2f')} | {t['rule']} | {verdict} |")
    return "\n".join(lines) + "\n"
