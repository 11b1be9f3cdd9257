"""``slimcv compress``: make a model N times faster, smaller or cheaper with sensible defaults, as a recipe.

The defaults (documented in docs/recipes.md, "slimcv compress"):
- The given model is pruned (structured, L1 filter norms, Torch-Pruning) rather than replaced by a
  student: it keeps the trained weights and works for every model Torch-Pruning can trace.
- ``--target-speedup S`` and ``--target-macs S`` remove 1 - 1/S of the MACs. MACs, not a latency goal,
  steer the pruning: batch-1 latency of small models is dominated by per-layer overheads and is noisy
  on shared machines, so chasing it can strip a model bare for an unreachable goal. The speed-up is then
  measured (all models timed interleaved) and compared with the target.
- ``--target-size S``: INT8 stores weights in a quarter of the bytes, so up to 3.5x needs no pruning;
  beyond that parameters are pruned by 1 - 3.5/S and the model is quantized.
- Pruning goes in steps of at most 25% each; each step is fine-tuned with cross-entropy plus KD
  (T=1 for segmentation, T=4 for classification) from the original, unpruned model.
- INT8 (static PTQ in ONNX Runtime) is measured on this machine and kept only when it is faster and
  within ``--max-drop``; CPUs without VNNI often run INT8 slower than FP32.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimcv._console import console, print_table
from slimcv.artifact import is_model_folder, read_summary, run_data_config
from slimcv.deploy.runtimes import available as available_runtimes
from slimcv.errors import SlimcvError
from slimcv.pipeline.recipe import validate
from slimcv.pipeline.runner import RunResult, run

MAX_STEP = 0.25  # at most this fraction removed per pruning step
INT8_SIZE = 3.5  # file-size factor INT8 reaches on its own (4x in theory; scales and graph overhead)


@dataclass
class CompressResult:
    """The run, the plan it followed, and the measured outcome against the target."""

    run: RunResult | None
    plan: dict[str, Any]
    outcome: dict[str, Any] = field(default_factory=dict)


def compress(model: Any, data: str | None = None, *, weights: str | None = None,
             target_speedup: float | None = None, target_size: float | None = None, target_macs: float | None = None,
             max_drop: float = 1.0, epochs: int | None = None, teacher_epochs: int | None = None,
             out_dir: str | Path = "runs/compress", overrides: Sequence[str] = (), dry_run: bool = False
             ) -> CompressResult:
    """Prune ``model`` toward one target, distilling from the original, quantize when it pays off here, and report
    the measured outcome. ``model`` is a model folder, an ``nn.Module``, a name or ``package.module:factory`` with
    ``weights`` (a trained model: saved as the run's ``source`` folder first), or a bare name, trained first."""
    task = None
    if _is_trained_object(model, weights):
        task = _given_task(model)
        model = str(_import_source(model, weights, data, Path(out_dir) / "source", dry_run))
    recipe, plan = compress_recipe(model, data, target_speedup=target_speedup, target_size=target_size,
                                   target_macs=target_macs, max_drop=max_drop, epochs=epochs,
                                   teacher_epochs=teacher_epochs, out_dir=out_dir, imported=task)
    rec = validate(recipe, "compress recipe")
    _print_plan(plan)
    if dry_run:
        import yaml

        print(yaml.safe_dump(recipe, sort_keys=False))
        if task is not None:  # the given model is saved as the source folder first: nothing to check yet
            console.print(f"would first save the given model as {model}, then run the recipe above")
            return CompressResult(None, plan)
        return CompressResult(run(rec, overrides, dry_run=True), plan)
    has_bench = any(stage.get("name") == "bench" for stage in recipe["stages"])
    first = run(rec, overrides, until="bench" if has_bench else None)
    outcome = judge(first, plan) if has_bench else {"note": "the recipe has no bench stage"}
    write_outcome(Path(out_dir), plan, outcome)  # before the report stage, so its verdict states the outcome
    result = run(rec, overrides)
    done = {r.name: r.status for r in first.stages}  # what the first call ran stays "ran", not "skipped"
    result.stages = [dataclasses.replace(r, status=done[r.name]) if r.status == "skipped" and r.name in done
                     else r for r in result.stages]
    _print_outcome(outcome)
    return CompressResult(result, plan, outcome)


def write_outcome(out_dir: Path, plan: dict[str, Any], outcome: dict[str, Any]) -> Path:
    """``compress.json``: the target, the plan and the measured outcome, for the report and for the record."""
    from slimcv._io import atomic_write_json

    label = f"{plan['factor']:g}x {'faster' if plan['target'] == 'speedup' else plan['target']}"
    summary = outcome.get("note", "")
    if "best" in outcome:
        b = outcome["best"]
        summary = f"{outcome['achieved']:.2f}x with {b['stage']} in {b['runtime']}"
        if outcome.get("drop") is not None:
            summary += f", {-outcome['drop']:+.2f} pt against the original's {outcome['original']['metric']:.2f}"
        if not outcome["within_budget"]:
            summary += f", outside the {plan['max_drop']:g} pt budget"
    return atomic_write_json(out_dir / "compress.json", {
        "stage": "compress", "target": {"kind": plan["target"], "factor": plan["factor"], "label": label},
        "plan": plan, "outcome": {**outcome, "met": bool(outcome.get("met")) and bool(outcome.get("within_budget")),
                                  "summary": summary}})


def compress_recipe(model: str, data: str | None, *, target_speedup: float | None = None,
                    target_size: float | None = None, target_macs: float | None = None, max_drop: float = 1.0,
                    epochs: int | None = None, teacher_epochs: int | None = None,
                    out_dir: str | Path = "runs/compress", imported: str | None = None
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The recipe ``compress`` runs, and the plan behind it (target, what is removed, why). ``imported``: the task
    of a given trained model saved (or, in a dry run, to be saved) as the folder ``model``."""
    plan = _plan(target_speedup, target_size, target_macs, max_drop)
    if imported:
        models, data_cfg, stages, original = {"original": {"run": str(model)}}, {"spec": data}, [], "original"
    else:
        models, data_cfg, stages, original = _source(model, data, teacher_epochs)
    from slimcv.pipeline.stages import STAGE_TYPES

    task = imported or _task(model, data_cfg)
    last = original
    if plan["remove"] > 0:
        steps = max(1, math.ceil(plan["remove"] / MAX_STEP - 1e-9))
        per_step = max(1, epochs // steps) if epochs else "auto"  # auto: scaled to what each step removed
        kd = {"name": "kd", "temperature": 1.0 if task == "segmentation" else 4.0}
        stages.append({"name": "prune", "input": original, "remove": round(plan["remove"], 4),
                       "target": plan["prune_target"], "steps": steps, "finetune_epochs": per_step,
                       "distill": [kd]})
        plan.update(steps=steps, finetune_epochs_per_step=per_step, kd=kd)
        last = "prune"
    have_quantize = "quantize" in STAGE_TYPES
    if have_quantize:
        stages.append({"name": "quantize", "input": last, "max_drop": max_drop})
    compared = [original] + (["prune"] if last == "prune" else []) + (["quantize"] if have_quantize else [])
    stages.append({"name": "bench", "inputs": compared, "runs": 30,  # every runtime this machine has
                   "runtimes": [rt.name for rt in available_runtimes()]})
    stages.append({"name": "report", "inputs": [*compared, "bench"], "baseline": original, "measure": False})
    plan["quantize"] = have_quantize
    recipe = {"name": "compress", "task": task, "data": data_cfg, "models": models, "out_dir": str(out_dir),
              "stages": stages}
    return recipe, plan


def _plan(speedup: float | None, size: float | None, macs: float | None, max_drop: float) -> dict[str, Any]:
    given = {k: v for k, v in {"speedup": speedup, "size": size, "macs": macs}.items() if v is not None}
    if len(given) != 1:
        raise SlimcvError("Give exactly one target: --target-speedup N, --target-size N or --target-macs N "
                          f"(got {', '.join(given) or 'none'}).")
    (kind, factor), = given.items()
    if not factor > 1:
        raise SlimcvError(f"--target-{kind} {factor} must be above 1 (2 means twice as fast/small/cheap).")
    if max_drop < 0:
        raise SlimcvError(f"--max-drop {max_drop} must be zero or positive (accuracy/mIoU points).")
    if kind == "size":
        remove = max(0.0, 1 - INT8_SIZE / factor)
        why = ("INT8 alone stores the weights about 3.5-4x smaller" if remove == 0 else
               f"INT8 gives about {INT8_SIZE}x; pruning removes the remaining {remove:.0%} of the parameters")
        return {"target": kind, "factor": factor, "prune_target": "params", "remove": remove, "why": why,
                "max_drop": max_drop}
    remove = 1 - 1 / factor
    if remove > 0.9:
        raise SlimcvError(f"--target-{kind} {factor} would remove {remove:.0%} of the MACs; structured pruning "
                          "keeps at most 90% off, so pick 10 or less or train a smaller student with a recipe.")
    why = f"removing {remove:.0%} of the MACs; the speed-up is then measured" if kind == "speedup" else \
        f"removing {remove:.0%} of the MACs"
    return {"target": kind, "factor": factor, "prune_target": "macs", "remove": remove, "why": why,
            "max_drop": max_drop}


def _is_trained_object(model: Any, weights: str | None) -> bool:
    from torch import nn

    return isinstance(model, nn.Module) or weights is not None


def _given_task(model: Any) -> str:
    from torch import nn

    from slimcv.artifact import guess_task
    from slimcv.models import model_task

    if isinstance(model, nn.Module):
        return guess_task(model)
    task = model_task(str(model))
    if task is None:
        from slimcv.models import create_model

        task = guess_task(create_model(str(model), 2))
    return task


def _import_source(model: Any, weights: str | None, data: str | None, folder: Path, dry_run: bool) -> Path:
    """Save a user's trained model (module, or name / factory + weights) as a model folder the recipe starts from,
    with its validation metric, so the outcome compares against it."""
    from slimcv.artifact import check_rebuildable, load_inputs, metric_key, save_model
    from slimcv.engine.evaluation import evaluate_model

    if data is None:
        raise SlimcvError("compress needs --data SPEC to fine-tune and score a model given with --weights or as a "
                          "module.")
    if dry_run:
        return folder
    from slimcv._io import check_owned

    check_owned(folder, "model.json")
    loaded, bundle = load_inputs(model, {"spec": data}, weights=weights)
    check_rebuildable(loaded.model, loaded.spec)
    metrics = evaluate_model(loaded.model, bundle, quiet=True).metrics
    key = metric_key(bundle.task)
    save_model(loaded.model, folder, loaded.spec, metrics=metrics)
    from slimcv.artifact import write_summary

    write_summary(folder, {"metrics": metrics, "best": {"metric": key, "value": metrics[key]}, "stage": "source"})
    console.print(f"compress: saved the given model as {folder} ({key} {metrics[key]:.2f})")
    return folder


def _source(model: str, data: str | None, teacher_epochs: int | None):
    """Models, data and first stages: a trained run is used as is; a model name is trained first."""
    path = Path(model)
    if path.is_file():
        if not is_model_folder(path.parent):
            raise SlimcvError(f"{model} is a bare weights file: give its run folder (with model.json), or a recipe "
                              "with models: {original: {model: ARCH, weights: FILE}} for `slimcv run`.")
        path = path.parent  # a checkpoint inside a run folder: the run
    if path.is_dir():
        data_cfg = run_data_config(path, data)
        if data_cfg is None:
            raise SlimcvError(f"Give --data: {model} records no data settings to read.")
        return {"original": {"run": str(path)}}, data_cfg, [], "original"
    if data is None:
        raise SlimcvError(f"Give --data: {model!r} is not a run folder, so it is trained first and needs a dataset.")
    from slimcv.models import check_model_name

    check_model_name(model)
    stage = {"name": "original", "type": "train", "model": "arch", "epochs": teacher_epochs or 10}
    return {"arch": {"model": model}}, {"spec": data}, [stage], "original"


def _task(model: str, data_cfg: dict[str, Any]) -> str | None:
    path = Path(model)
    path = path.parent if path.is_file() else path
    if is_model_folder(path):
        from slimcv.artifact import read_model_spec

        return read_model_spec(path).get("task")
    from slimcv.models import model_task

    return model_task(model)


def judge(result: RunResult, plan: dict[str, Any]) -> dict[str, Any]:
    """Measured outcome: the best compressed candidate within the accuracy budget vs the original.

    Speed-ups are against the original's fastest measured runtime (so a gain from switching runtime alone
    is not credited to compression); sizes against its weights file; MACs against its MACs."""
    bench = json.loads((result["bench"].folder / "bench.json").read_text())
    rows = _candidates(result, bench)
    original = [r for r in rows if r["stage"] == "original"]
    others = [r for r in rows if r["stage"] not in ("original", "?")]
    if not original or not others:
        return {"note": "the bench measured no original or no compressed model"}
    base = {"metric": original[0]["metric"], "latency_ms": min(r["latency_ms"] for r in original),
            "file_bytes": original[0]["file_bytes"], "macs": original[0]["macs"]}
    ok = [r for r in others if r["metric"] is not None and base["metric"] is not None
          and base["metric"] - r["metric"] <= plan["max_drop"]]
    pool = ok or others
    key = {"speedup": "latency_ms", "size": "file_bytes", "macs": "macs"}[plan["target"]]
    known = [r for r in pool if r[key]] or pool
    best = min(known, key=lambda r: (r[key] or math.inf, r["latency_ms"]))
    achieved = base[key] / best[key] if base[key] and best[key] else None
    drop = base["metric"] - best["metric"] if None not in (base["metric"], best["metric"]) else None
    return {"best": best, "original": base, "achieved": achieved, "target": plan["factor"],
            "met": bool(achieved and achieved >= plan["factor"]), "within_budget": best in ok, "drop": drop,
            "rows": rows}


def _candidates(result: RunResult, bench: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (model, runtime) the bench measured, with the stage's accuracy attached."""
    stage_of = {}
    for record in result.stages:
        stage_of[str(record.folder.resolve())] = record
    original = result.recipe.config.models.get("original")
    if original is not None and original.run:
        stage_of[str(Path(original.run).resolve())] = None
    rows: list[dict[str, Any]] = []
    for m in bench["models"]:
        src = Path(m["source"])
        folder = src.parent if src.suffix == ".onnx" else src
        record = stage_of.get(str(folder.resolve()), "?")
        stage = "original" if record is None else getattr(record, "name", "?")
        metric = _metric(record, m, result) if record != "?" else None
        macs = m.get("macs") or _source_macs(record, result, rows)
        for rt in m["runtimes"]:
            rows.append({"stage": stage, "model": m["name"], "runtime": rt["runtime"], "metric": metric,
                         "latency_ms": rt["latency_ms"]["median"], "file_bytes": m.get("file_bytes"),
                         "macs": macs, "params": m.get("params")})
    return rows


def _source_macs(record, result: RunResult, rows: list[dict[str, Any]]) -> int | None:
    """An ONNX file has no MAC count of its own: it computes what the model it was made from computes."""
    if not hasattr(record, "type") or record.type != "quantize":
        return None
    source = result.recipe.stage(record.name).refs.get("input")
    try:
        return result[source].metrics.get("macs")
    except KeyError:  # the original trained run: measured in an earlier row
        return next((r["macs"] for r in rows if r["stage"] == "original" and r["macs"]), None)


def _metric(record, model: dict[str, Any], result: RunResult) -> float | None:
    if record is None:  # the original trained run
        best = (read_summary(result.recipe.config.models["original"].run) or {}).get("best", {})
        return best.get("value")
    if record.type == "quantize":
        info = json.loads((record.folder / "quantize.json").read_text())
        for q in info.get("models", []):
            if Path(q["path"]).name == Path(model["source"]).name or q["name"] == model["name"]:
                metrics = q.get("metrics") or {}
                return metrics.get("miou", metrics.get("top1"))
        return None
    return record.metrics.get("miou", record.metrics.get("top1"))


def _print_plan(plan: dict[str, Any]) -> None:
    console.print(f"compress: target {plan['factor']:g}x {plan['target']}: {plan['why']}; accuracy budget "
                  f"{plan['max_drop']:g} pt" + ("" if plan.get("quantize", True) else
                                                    " (quantization not available in this install)"))


def _print_outcome(o: dict[str, Any]) -> None:
    if "best" not in o:
        console.print(f"compress: {o.get('note')}")
        return
    rows = [(r["stage"], r["runtime"], r["metric"], r["latency_ms"], (r["file_bytes"] or 0) / 2**20,
             (r["macs"] or 0) / 1e6) for r in o["rows"]]
    print_table("compress: measured (batch 1, interleaved)", ["stage", "runtime", "metric", "ms", "MiB", "MMACs"],
                rows)
    b = o["best"]
    verdict = "met" if o["met"] else "missed"
    budget = "within" if o["within_budget"] else "outside"
    print(f"target {o['target']:g}x {verdict}: {o['achieved']:.2f}x with {b['stage']} in {b['runtime']} "
          f"(drop {o['drop']:.2f} points, {budget} the budget)")
