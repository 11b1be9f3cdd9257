"""Stage adapters: turn a recipe stage into the stage function's own config, call it, report its outputs.

Each adapter is two plain functions: ``build(spec, resolver) -> config`` (pure: used to validate a
recipe before anything runs) and ``run(spec, ctx) -> StageOutput``. The stage functions themselves
(``slimcv.train``, ``slimcv.distill``, ``slimcv.prune.prune.prune`` ...) do the work and write their
run folders; the runner only adds a manifest beside them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from slimcv.config import CompressConfig, DistillConfig, PruneConfig, TrainConfig
from slimcv.errors import SlimcvError
from slimcv.pipeline.finetune import FinetuneConfig, finetune
from slimcv.run_folder import BENCH_JSON, BEST_WEIGHTS, COMPRESS_JSON, LAST_JSON, MODEL_JSON, MODEL_WEIGHTS, QUANTIZE_JSON, REPORT_JSON
from slimcv.deploy.runtimes import EAGER, ORT

if TYPE_CHECKING:
    from slimcv.pipeline.spec import Resolver, StageSpec


@dataclass
class StageOutput:
    """What a stage produced: files to hash (relative to its folder), scalar metrics, and whether it holds a model."""

    artifacts: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)
    model_dir: Path | None = None


@dataclass(frozen=True)
class StageType:
    """How the runner drives one kind of stage."""

    schema: type[BaseModel] | str  # the config class, or "module:Name" imported only when needed
    build: Callable[..., Any]
    run: Callable[..., StageOutput]
    refs: tuple[str, ...] = ()
    managed: tuple[str, ...] = ("out_dir", "resume")
    resumable: bool = False
    makes_model: bool = True
    doc: str = ""

    def schema_class(self) -> type[BaseModel]:
        """The stage's config class (its keys are what 'unknown key' errors list)."""
        if isinstance(self.schema, str):
            import importlib

            module, _, name = self.schema.partition(":")
            return getattr(importlib.import_module(module), name)
        return self.schema


# ---------------------------------------------------------------- helpers shared by the adapters

class _StageConfig(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}


def _required_ref(spec: StageSpec, key: str) -> str:
    ref = spec.refs.get(key)
    if ref is None:
        raise SlimcvError(f"'{key}' is missing: name the earlier stage whose model this {spec.type} stage uses")
    return ref


def _model_fields(spec: StageSpec, r: Resolver, key: str = "model") -> dict[str, Any]:
    ref = spec.params.get(key)
    if ref is None:
        raise SlimcvError(f"'{key}' is missing: name a model of the recipe's models (or a registered model)")
    entry = r.model(str(ref), f"'{key}'")
    if entry.model is None:
        raise SlimcvError(f"'{key}': {ref!r} is a trained run; refer to it with 'input' or 'teacher' instead")
    extra = spec.params.get("model_kwargs", {})
    if not isinstance(extra, dict):
        raise SlimcvError(f"'model_kwargs' must be a mapping of builder options, got {extra!r}")
    kwargs = {**entry.model_kwargs, **extra}
    return {"model": entry.model, "model_kwargs": kwargs, **({"weights": entry.weights} if entry.weights else {})}


def _teacher_fields(spec: StageSpec, r: Resolver) -> dict[str, Any]:
    ref = _required_ref(spec, "teacher")
    entry = None if ref in r.stages else r.cfg.models.get(ref)
    if entry is not None and entry.run is None:  # a named architecture with a weights file
        return {"teacher": entry.model, "teacher_weights": entry.weights, "teacher_kwargs": entry.model_kwargs}
    return {"teacher": str(r.folder(ref))}


def _resume(folder: Path) -> bool:
    return (folder / LAST_JSON).is_file()


# ---------------------------------------------------------------- train

def _build_train(spec: StageSpec, r: Resolver) -> TrainConfig:
    values = {k: v for k, v in spec.params.items() if k not in ("model", "model_kwargs")}
    values.update(_model_fields(spec, r), data=r.data(spec), out_dir=str(r.folder(spec.name)))
    return TrainConfig(**values)


def _run_train(spec: StageSpec, ctx) -> StageOutput:
    from slimcv.engine.train import train

    cfg = spec.config.model_copy(update={"resume": _resume(ctx.folder(spec.name))})
    result = train(cfg, ctx.data(spec))
    return StageOutput([BEST_WEIGHTS, MODEL_JSON], _best(result), Path(cfg.out_dir))


def _best(result) -> dict[str, Any]:
    best = result.best or {}
    return {best.get("metric", "metric"): best.get("value"), "best_epoch": best.get("epoch")}


# ---------------------------------------------------------------- distill

def _build_distill(spec: StageSpec, r: Resolver) -> DistillConfig:
    values = {k: v for k, v in spec.params.items() if k not in ("model", "model_kwargs")}
    values.update(_model_fields(spec, r), **_teacher_fields(spec, r), data=r.data(spec), cache=_cache(values, r),
                  out_dir=str(r.folder(spec.name)))
    return DistillConfig(**values)


def _cache(values: dict[str, Any], r: Resolver) -> dict[str, Any]:
    """A stage's offline teacher maps: in the recipe's run folder (cache/), shared by its stages."""
    cache = values.pop("cache", {})
    if not isinstance(cache, dict):
        raise SlimcvError(f"'cache' must be a mapping (dir, scale, dtype, topk), got {cache!r}")
    return {"dir": str(r.root / "cache"), **cache}


def _run_distill(spec: StageSpec, ctx) -> StageOutput:
    from slimcv.distill.distill import distill

    cfg = spec.config.model_copy(update={"resume": _resume(ctx.folder(spec.name))})
    result = distill(cfg, ctx.data(spec))
    metrics = _best(result.train)
    key = next(iter(metrics))
    teacher = next((row for row in result.comparison if row["model"] == "teacher"), {})
    if key in teacher:
        metrics["teacher_" + key] = teacher[key]
    return StageOutput([BEST_WEIGHTS, MODEL_JSON], metrics, Path(cfg.out_dir))


# ---------------------------------------------------------------- prune

def _build_prune(spec: StageSpec, r: Resolver) -> PruneConfig:
    return PruneConfig(**{**spec.params, "source": str(r.folder(_required_ref(spec, "input"))), "data": r.data(spec),
                          "out_dir": str(r.folder(spec.name))})


def _run_prune(spec: StageSpec, ctx) -> StageOutput:
    from slimcv.prune.prune import prune

    # Re-pruning the same source is deterministic; fine-tuning steps resume from step_N/ checkpoints.
    result = prune(spec.config, ctx.data(spec))
    key = next(k for k in result.after if k in ("miou", "top1"))
    metrics = {key: result.after[key], f"{key}_before": result.before[key],
               "params_removed": 1 - result.after["params"] / result.before["params"],
               "macs_removed": 1 - result.after["macs"] / result.before["macs"]}
    return StageOutput([MODEL_WEIGHTS, MODEL_JSON], metrics, Path(spec.config.out_dir))


# ---------------------------------------------------------------- finetune (the function: pipeline/finetune.py)

_FINETUNE_MANAGED = ("source", "teacher_weights", "teacher_kwargs", "out_dir", "resume")


def _build_finetune(spec: StageSpec, r: Resolver) -> FinetuneConfig:
    values = {**spec.params, "source": str(r.folder(_required_ref(spec, "input"))), "data": r.data(spec),
              "out_dir": str(r.folder(spec.name))}
    values["cache"] = _cache(values, r)
    if "teacher" in spec.refs:
        values.update(_teacher_fields(spec, r))
        values.setdefault("losses", [{"name": "kd"}])
    elif values.get("losses"):
        raise SlimcvError("'losses' need a teacher: add 'teacher: <stage>' or remove the losses")
    return FinetuneConfig(**values)


def _run_finetune(spec: StageSpec, ctx) -> StageOutput:
    cfg = spec.config.model_copy(update={"resume": _resume(ctx.folder(spec.name))})
    result = finetune(cfg, ctx.data(spec))
    return StageOutput([BEST_WEIGHTS, MODEL_JSON], _best(result), Path(cfg.out_dir))


# ---------------------------------------------------------------- quantize (and export)

def _build_quantize(spec: StageSpec, r: Resolver):
    from slimcv.quantize.quantize import QuantizeConfig

    return QuantizeConfig(**{**spec.params, "source": str(r.folder(_required_ref(spec, "input"))),
                             "data": r.data(spec), "out_dir": str(r.folder(spec.name))})


def _run_quantize(spec: StageSpec, ctx) -> StageOutput:
    from slimcv.quantize.quantize import quantize

    result = quantize(spec.config, ctx.data(spec))  # replaces its folder atomically when done
    from slimcv.artifact import metric_key

    key = metric_key(ctx.data(spec).task)
    files = sorted({m["path"] for m in result.models if str(m["path"]).endswith(".onnx")})
    chosen = next((m for m in result.models if m["name"] == result.recommendation["name"]), None)
    metrics = {"recommended": result.recommendation["name"], "why": result.recommendation["why"],
               "models": {m["name"]: {key: m["metrics"][key], "latency_ms": m["latency_ms"]["median"],
                                      "file_bytes": m["file_bytes"]} for m in result.models}}
    if chosen is not None:
        metrics.update({key: chosen["metrics"][key], "latency_ms": chosen["latency_ms"]["median"],
                        "file_bytes": chosen["file_bytes"]})
    return StageOutput([QUANTIZE_JSON, *files], metrics)


class ExportStageConfig(_StageConfig):
    """ONNX export of an earlier stage's model with the ONNX Runtime agreement check (see `slimcv export`)."""

    source: str = ""
    out: str = "model.onnx"
    options: dict[str, Any] = Field(default_factory=dict, description="ExportConfig keys: batch, opset, exporter ...")


def _build_export(spec: StageSpec, r: Resolver) -> ExportStageConfig:
    from slimcv.export.onnx import ExportConfig

    options = {k: v for k, v in spec.params.items()}
    ExportConfig(**options)  # unknown keys and bad values fail here, before anything runs
    return ExportStageConfig(source=str(r.folder(_required_ref(spec, "input"))),
                             out=str(r.folder(spec.name) / "model.onnx"), options=options)


def _run_export(spec: StageSpec, ctx) -> StageOutput:
    from slimcv.export.onnx import export

    cfg: ExportStageConfig = spec.config
    result = export(cfg.source, cfg.out, ctx.data(spec), **cfg.options)
    agreement = result.agreement.to_dict() if result.agreement else {}
    return StageOutput(["model.onnx", "model.onnx.json"], {"file_bytes": result.file_bytes, "opset": result.opset,
                                                      **{f"agreement_{k}": v for k, v in agreement.items()
                                                         if isinstance(v, (int, float))}})


# ---------------------------------------------------------------- compress

def _build_compress(spec: StageSpec, r: Resolver) -> CompressConfig:
    _required_ref(spec, "input")
    return CompressConfig(**{**spec.params, "out_dir": str(r.folder(spec.name))})


def _run_compress(spec: StageSpec, ctx) -> StageOutput:
    from slimcv.pipeline.compress import compress

    cfg: CompressConfig = spec.config
    # a killed search resumes from its own record (search_state.json) in the stage folder
    ref = _required_ref(spec, "input")
    result = compress(str(ctx.folder(ref)), ctx.resolver.data(spec), source_name=f"the {ref}", **cfg.model_dump())
    c = result.search.closest if result.search is not None else None
    metrics: dict[str, Any] = {"met": result.met, "sentence": result.sentence}
    if c is not None:
        metrics.update({"candidate": c.name, "runtime": c.label, "speedup": c.speedup, "latency_ms": c.latency_ms,
                        "metric": c.metric, "file": str(result.file) if result.file else None})
    model_dir = result.folder if result.folder is not None and c is not None and c.precision == "fp32" else None
    return StageOutput([COMPRESS_JSON], metrics, model_dir)


# ---------------------------------------------------------------- bench

class BenchStageConfig(_StageConfig):
    """Latency, size and MACs of the input stages' models, timed interleaved (see `slimcv bench`)."""

    sources: tuple[str, ...] = ()
    runtimes: tuple[str, ...] = (EAGER, ORT)
    batch_sizes: tuple[int, ...] = (1,)
    warmup: int = Field(3, ge=0)
    runs: int = Field(20, ge=1)
    threads: int | None = Field(None, ge=1)
    memory: bool = False
    out: str = BENCH_JSON


def _build_bench(spec: StageSpec, r: Resolver) -> BenchStageConfig:
    sources = [str(r.folder(ref)) for ref in spec.refs.get("inputs", [])]
    if not sources:
        raise SlimcvError("'inputs' is empty: name the earlier stages whose models to measure")
    return BenchStageConfig(**{**spec.params, "sources": sources, "out": str(r.folder(spec.name) / BENCH_JSON)})


def _run_bench(spec: StageSpec, ctx) -> StageOutput:
    from slimcv.bench.bench import bench

    cfg: BenchStageConfig = spec.config
    result = bench(list(cfg.sources), runtimes=cfg.runtimes, batch_sizes=cfg.batch_sizes, warmup=cfg.warmup,
                   runs=cfg.runs, threads=cfg.threads, memory=cfg.memory, out=cfg.out)
    latency = {f"{m.name} {rt.runtime}": rt.latency_ms.median for m in result.models for rt in m.runtimes}
    return StageOutput([BENCH_JSON], {"latency_ms": latency})


# ---------------------------------------------------------------- report

class ReportStageConfig(_StageConfig):
    """One HTML page + Markdown comparing the input stages (see `slimcv report`)."""

    runs: tuple[str, ...] = ()
    bench: tuple[str, ...] = ()
    baseline: str | None = Field(None, description="stage to compare against (default: the first input)")
    measure: bool = Field(True, description="time the models that have no latency yet, interleaved")
    images: int = Field(4, ge=0, description="validation images shown as overlays")
    threads: int | None = Field(None, ge=1)
    title: str | None = None
    out: str = "report"


def _build_report(spec: StageSpec, r: Resolver) -> ReportStageConfig:
    inputs = spec.refs.get("inputs", [])
    is_bench = {ref: ref in r.stages and r.stages[ref].type == "bench" for ref in inputs}
    runs = [str(r.folder(ref)) for ref in inputs if not is_bench[ref]]
    if not runs:
        raise SlimcvError("'inputs' names no model stage: list the earlier stages to compare")
    benches = [str(r.folder(ref) / BENCH_JSON) for ref in inputs if is_bench[ref]]
    baseline = spec.params.get("baseline")
    if baseline is not None and baseline not in inputs:
        raise SlimcvError(f"'baseline' {baseline!r} is not one of the report's inputs ({', '.join(inputs)})")
    values = {**spec.params, "runs": runs, "bench": benches, "out": str(r.folder(spec.name))}
    if baseline is not None:
        values["baseline"] = r.folder(baseline).name  # the report names entries by their folder
    return ReportStageConfig(**values)


def _run_report(spec: StageSpec, ctx) -> StageOutput:
    from slimcv.report.report import report

    cfg: ReportStageConfig = spec.config
    title = cfg.title or f"slimcv run: {ctx.recipe.config.name}"
    result = report(list(cfg.runs), out=cfg.out, baseline=cfg.baseline, bench=list(cfg.bench), measure=cfg.measure,
                    images=cfg.images, threads=cfg.threads, title=title)
    return StageOutput(["report.html", "report.md", REPORT_JSON], {"html": str(result.html)})


# ---------------------------------------------------------------- registry of stage types (picked by name)


STAGE_TYPES: dict[str, StageType] = {
    "train": StageType(TrainConfig, _build_train, _run_train, resumable=True,
                       doc="train a model of the recipe from scratch (or from its weights)"),
    "distill": StageType(DistillConfig, _build_distill, _run_distill, refs=("teacher",), resumable=True,
                         doc="train a student with CE + KD from an earlier stage's model"),
    "prune": StageType(PruneConfig, _build_prune, _run_prune, refs=("input",), managed=("out_dir", "source"),
                       resumable=True, doc="structured pruning toward a params/MACs target with fine-tuning"),
    "finetune": StageType(FinetuneConfig, _build_finetune, _run_finetune, refs=("input", "teacher"),
                          managed=_FINETUNE_MANAGED, resumable=True,
                          doc="fine-tune an earlier stage's model (optionally with KD from a teacher)"),
    "quantize": StageType("slimcv.quantize.quantize:QuantizeConfig", _build_quantize,
                          _run_quantize, refs=("input",), managed=("source", "out_dir"),
                          doc="FP32 ONNX + INT8 (static PTQ / dynamic / QAT) scored as deployed, runtime chosen"),
    "export": StageType("slimcv.export.onnx:ExportConfig", _build_export, _run_export,
                        refs=("input",), makes_model=False, doc="ONNX export checked against PyTorch in ORT"),
    "compress": StageType(CompressConfig, _build_compress, _run_compress, refs=("input",), resumable=True,
                          managed=("out_dir",), doc="the fastest model within a latency target and an accuracy "
                          "budget, searched from an earlier stage's model (see `slimcv compress`)"),
    "bench": StageType(BenchStageConfig, _build_bench, _run_bench, refs=("inputs",), managed=("sources", "out"),
                       makes_model=False, doc="latency/size/MACs of earlier stages' models, timed interleaved"),
    "report": StageType(ReportStageConfig, _build_report, _run_report, refs=("inputs",),
                        managed=("runs", "bench", "out"), makes_model=False,
                        doc="HTML + Markdown report comparing earlier stages"),
}
