"""Stage configs: YAML or dicts validated into frozen pydantic models; unknown keys are rejected."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from slimcv.errors import SlimcvError

Size = tuple[int, int] | int | None


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class DataConfig(_Config):
    """Which dataset, at what size, with which augmentations and batch size."""

    spec: str = "synthetic-shapes"
    size: Size = None
    eval_size: Size = None
    augment: tuple[str, ...] | None = None
    batch_size: int = Field(8, ge=1)
    eval_batch_size: int | None = Field(None, ge=1)
    workers: int | None = Field(None, ge=0, description="loader processes (default: one per 4 cores, 1 to 8; "
                                "training threads take the remaining cores)")
    cache: Literal["auto", "memory", "none"] = Field(
        "auto", description="decoded images kept in memory: auto (when they fit in a quarter of the free memory), "
        "memory (always) or none (read from disk every epoch)")
    batched_augment: Literal["auto", "on", "off"] = Field(
        "auto", description="augment whole batches on the training device from decoded uint8 samples kept there: "
        "auto (on CUDA, when they fit in a quarter of its free memory), on (also on a CPU) or off")
    train_split: str = "train"
    val_split: str = "val"
    subset: int | None = Field(None, ge=1, description="use only N training samples, spread evenly over the split")
    val_subset: int | None = Field(None, ge=1, description="use only N validation samples, spread evenly over the split")
    options: dict[str, Any] = Field(default_factory=dict)

    def loader_workers(self) -> int:
        """``workers`` (at most this machine's cores: a setting made on a bigger machine must not swamp this one),
        or the default for this machine's cores."""
        return min(self.workers, usable_cores()) if self.workers is not None else default_workers()


def usable_cores() -> int:
    """The cores this process may run on."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers() -> int:
    """Loader processes by default: one per 4 cores, at least 1, at most 8 (decoded images are kept in memory, so
    a worker only augments)."""
    return max(1, min(8, usable_cores() // 4))


class OptimConfig(_Config):
    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, le=1)
    nesterov: bool = False


class ScheduleConfig(_Config):
    name: Literal["cosine", "step", "poly", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    step_size: int = Field(30, ge=1, description="epochs between decays for 'step'")
    gamma: float = Field(0.1, gt=0, le=1)
    power: float = Field(0.9, gt=0, description="exponent for 'poly'")
    min_lr: float = Field(0.0, ge=0)


class TrainConfig(_Config):
    """Everything `slimcv train` needs; resolved and saved as JSON beside each checkpoint."""

    model: str = "unet"
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    epochs: int = Field(10, ge=1)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    clip_grad_norm: float | None = Field(None, gt=0)
    class_weights: tuple[float, ...] | Literal["median_frequency"] | None = None
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    amp: Literal["auto", "none", "fp16", "bf16"] = Field(
        "auto", description="autocast precision; auto: measured at start-up (bf16 only where computed natively)")
    channels_last: bool | Literal["auto"] = Field("auto", description="channels-last memory layout; auto: measured")
    speed_probe: bool = Field(True, description="time a few steps of each precision and layout left on auto and "
                              "train with the fastest (off: FP32, NCHW)")
    deterministic: bool = False
    seed: int = 0
    eval_every: int = Field(1, ge=1)
    metric: str | None = Field(None, description="metric that picks the best checkpoint (default: miou / top1)")
    device: str = "auto"
    threads: int | None = Field(None, ge=1, description="intra-op threads (default: OMP_NUM_THREADS when set, else "
                                "the cores left after the loader's workers)")
    out_dir: str = "runs/train"
    resume: bool = False
    keep_checkpoints: int = Field(2, ge=1)
    tensorboard: bool = True
    progress: bool = True

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        from slimcv.models import check_model_name

        check_model_name(v)
        return v


C = TypeVar("C", bound=BaseModel)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a YAML file into a dict with one-sentence errors for missing files and bad syntax."""
    path = Path(path)
    if not path.is_file():
        raise SlimcvError(f"Config file {path} does not exist; check the path.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SlimcvError(f"{path} is not valid YAML{where}: {getattr(e, 'problem', e)}.") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SlimcvError(f"{path} must hold a mapping of keys to values at its top level.")
    return data


def build_config(cls: type[C], values: dict[str, Any] | C, source: str = "config") -> C:
    """Validate ``values`` into ``cls``; errors name the key path and what is allowed."""
    if isinstance(values, cls):
        return values
    try:
        return cls.model_validate(_paths_as_str(values))
    except ValidationError as e:
        raise SlimcvError(format_validation_error(e, source)) from None


def _paths_as_str(obj: Any) -> Any:
    """pathlib paths where configs hold strings (``out_dir=Path(...)`` from Python)."""
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _paths_as_str(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_paths_as_str(v) for v in obj)
    return obj


def format_validation_error(e: ValidationError, source: str) -> str:
    parts = []
    for err in e.errors()[:5]:
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}'")
        else:
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            parts.append(f"'{key}': {msg} (got {err.get('input')!r})")
    more = f" and {len(e.errors()) - 5} more" if len(e.errors()) > 5 else ""
    return f"Invalid {source}: " + "; ".join(parts) + more + "."


def set_by_path(values: dict[str, Any], dotted: str, value: Any) -> None:
    """Apply an override like ``optim.lr=0.01`` to a nested dict (value parsed as YAML)."""
    keys = dotted.split(".")
    node = values
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise SlimcvError(f"Cannot set {dotted!r}: '{k}' is not a section.")
    node[keys[-1]] = yaml.safe_load(value) if isinstance(value, str) else value


class LossSpec(_Config):
    """One distillation term: a registered KD loss (or 'feature'), its weight, temperature and options."""

    name: str
    weight: float = Field(1.0, ge=0)
    temperature: float | None = Field(None, gt=0, description="default: 1 for segmentation maps, 4 for "
                                      "classification logits (the best measured on CamVid and CIFAR-10)")
    params: dict[str, Any] = Field(default_factory=dict)
    layers: tuple[tuple[str, str], ...] = Field((), description="feature only: [student_layer, teacher_layer] pairs")

    @field_validator("name")
    @classmethod
    def _known_loss(cls, v: str) -> str:
        from slimcv.distill.losses import KD_LOSSES

        if v != "feature":
            KD_LOSSES.get(v)
        return v


class CacheConfig(_Config):
    """Offline teacher maps: where, at what fraction of the training size, stored how."""

    dir: str | None = Field(None, description="where the maps are stored (default: teacher_cache/ in the run's "
                            "out_dir; a recipe keeps them in its run folder's cache/)")
    scale: float | Literal["auto"] = Field("auto", description="fraction of the training size the maps are "
                                           "stored at; auto: full size when the cache fits in 2 GiB, else 1/2, 1/4")

    @field_validator("scale")
    @classmethod
    def _scale_range(cls, v):
        if v != "auto" and not 0 < v <= 1:
            raise ValueError("scale must be in (0, 1], or auto")
        return v
    dtype: Literal["uint8", "fp16", "topk"] = "uint8"
    topk: int = Field(3, ge=1)


WEIGHT_ALIASES = ("ce_weight", "kd_weight")  # config keys that name other fields' values (see weight_aliases)


def weight_aliases(values: Any, losses_key: str) -> Any:
    """``ce_weight`` is ``alpha`` (the cross-entropy's weight); ``kd_weight`` sets the weight of every KD loss.
    Unambiguous names for users coming from formulations where ``alpha`` weights the KD term."""
    if not isinstance(values, dict) or not ({"ce_weight", "kd_weight"} & set(values)):
        return values
    values = dict(values)
    if "ce_weight" in values:
        if "alpha" in values and values["alpha"] != values["ce_weight"]:
            raise ValueError("alpha and ce_weight are the same setting (the cross-entropy's weight); give one")
        values["alpha"] = values.pop("ce_weight")
    if "kd_weight" in values:
        weight = values.pop("kd_weight")
        specs = values.get(losses_key) or ([{"name": "kd"}] if losses_key == "losses" else [])
        if not specs:
            raise ValueError(f"kd_weight needs a KD loss to weight; set {losses_key}, e.g. [{{name: kd}}]")
        values[losses_key] = [{**(s if isinstance(s, dict) else s.model_dump()), "weight": weight} for s in specs]
    return values


class DistillConfig(TrainConfig):
    """`slimcv distill`: TrainConfig for the student (``model``) plus the teacher and the losses."""

    teacher: str = Field(..., description="teacher run folder, or a model name with teacher_weights")
    teacher_kwargs: dict[str, Any] = Field(default_factory=dict)
    teacher_weights: str | None = None
    mode: Literal["online", "offline"] = "online"
    alpha: float = Field(1.0, ge=0, description="weight of the cross-entropy on hard labels: loss = alpha * CE + "
                         "sum of weight * KD (alias ce_weight; in torchdistill and Hinton et al. alpha weights the KD "
                         "term instead)")
    # a factory: building LossSpec here would import the loss registry (and torch) with this module
    losses: tuple[LossSpec, ...] = Field(default_factory=lambda: (LossSpec(name="kd"),))
    kd_warmup_epochs: float = Field(0.0, ge=0, description="the KD terms' weight rises linearly from 0 to its "
                                    "value over this many epochs (0: full weight from the first step)")
    cache: CacheConfig = Field(default_factory=CacheConfig)
    unlabelled: str | dict[str, Any] | None = Field(
        None, description="images without labels the student also learns from, through the teacher's answers only: "
        "a folder of images, a dataset spec (its labels unused), or {spec, options, split}")
    out_dir: str | None = Field("runs/distill", description="where the student's run is saved (None: not saved)")

    @model_validator(mode="before")
    @classmethod
    def _weight_aliases(cls, values: Any) -> Any:
        return weight_aliases(values, "losses")


class PruneConfig(_Config):
    """`slimcv prune`: structured pruning of a trained run toward a target, fine-tuning after each step."""

    source: str = Field(..., description="run folder of the model to prune")
    data: DataConfig = Field(default_factory=DataConfig)
    remove: float = Field(0.3, gt=0, lt=1, description="fraction of params, MACs or latency to remove")
    target: Literal["params", "macs", "latency"] = "params"
    method: Literal["hard", "soft"] = Field("hard", description="hard: prune then fine-tune; soft: zero filters "
                                            "every fine-tuning epoch (SFP), remove them at the end")
    soft_epochs: int | None = Field(None, ge=1, description="soft: epochs of soft pruning before the filters "
                                    "are removed and the rest of finetune_epochs train the smaller network "
                                    "(default: half)")
    steps: int = Field(1, ge=1)
    importance: str = "l1"
    global_pruning: bool = False
    max_layer_ratio: float = Field(0.9, gt=0, lt=1)
    min_channels: int = Field(1, ge=1, description="layer-uniform pruning leaves a layer at least this many "
                              "channels (layers already that narrow are left alone)")
    ignore: tuple[str, ...] = Field((), description="layer names never pruned (besides the class outputs)")
    round_to: int = Field(1, ge=1, description="layer-uniform pruning keeps channel counts at multiples of this "
                          "(layers that narrow stay whole)")
    calibration_batches: int = Field(4, ge=1, description="training batches for taylor/activation/apoz")
    bn_batches: int = Field(16, ge=0, description="training batches that re-estimate the BatchNorm statistics "
                            "after each pruning step (0: keep the old ones)")
    finetune_epochs: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        0, description="epochs of fine-tuning after each step; 'auto': the source's own training epochs times the "
        "fraction of its MACs the step removed (at least 1; 10 training epochs assumed when unknown)")
    distill: tuple[LossSpec, ...] = Field((), description="KD losses from the unpruned model during fine-tuning")
    alpha: float = Field(1.0, ge=0, description="weight of the cross-entropy when distill is set: loss = alpha * "
                         "CE + sum of weight * KD (alias ce_weight)")
    class_weights: tuple[float, ...] | Literal["median_frequency", "source"] | None = Field(
        "source", description="cross-entropy class weights while fine-tuning; 'source': those the pruned run "
        "was trained with")
    sensitivity: tuple[float, ...] = Field((), description="ratios for a per-layer sensitivity analysis first")
    layer_ratios: dict[str, float] | None = Field(None, description="channel ratio per layer name (e.g. from a "
                                                  "sensitivity analysis), used instead of the remove target")
    max_drop: float | None = Field(None, gt=0, description="with sensitivity: per-layer ratios that keep each "
                                   "layer's drop within this, used instead of the remove target")
    sensitivity_batches: int = Field(8, ge=1, description="validation batches each sensitivity trial scores")
    latency_runs: int = Field(20, ge=0, description="timed batch-1 runs for the before/after latency (0: skip)")
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    device: str = "auto"
    threads: int | None = Field(None, ge=1, description="intra-op threads of the fine-tuning and the timing "
                                "(default: OMP_NUM_THREADS when set, else the cores)")
    seed: int = 0
    out_dir: str | None = Field("runs/prune", description="where the pruned model is saved (None: not saved)")
    progress: bool = True

    @model_validator(mode="before")
    @classmethod
    def _weight_aliases(cls, values: Any) -> Any:
        return weight_aliases(values, "distill")

    @model_validator(mode="after")
    def _consistent(self) -> "PruneConfig":
        if self.method == "soft" and (self.finetune_epochs == 0 or self.steps != 1):
            raise ValueError("method soft zeroes filters during fine-tuning: set finetune_epochs >= 1 and steps 1")
        if self.soft_epochs is not None and self.finetune_epochs != "auto" and self.soft_epochs > self.finetune_epochs:
            raise ValueError(f"soft_epochs ({self.soft_epochs}) cannot exceed finetune_epochs ({self.finetune_epochs})")
        if self.max_drop is not None and not self.sensitivity:
            raise ValueError("max_drop needs sensitivity ratios, e.g. sensitivity: [0.25, 0.5, 0.75]")
        if any(spec.name == "feature" for spec in self.distill):
            raise ValueError("distill during pruning supports logit losses (kd, cwd, dkd, dist), not feature")
        return self


class ExportConfig(_Config):
    """How to export: batch and spatial axes, opset, exporter, simplification and the agreement check."""

    batch: Literal["dynamic"] | int = "dynamic"
    dynamic_hw: bool | None = Field(None, description="dynamic height/width; default: True for segmentation")
    size: tuple[int, int] | None = Field(None, description="H W of the example (default: the data's eval size)")
    opset: int = 17
    exporter: Literal["torchscript", "dynamo"] = "torchscript"
    simplify: bool = False
    check: bool = True
    samples: int = Field(8, ge=1, description="real validation samples for the agreement check")
    atol: float = Field(1e-4, ge=0)
    rtol: float = Field(1e-3, ge=0)
    min_agreement: float = Field(0.999, ge=0, le=1, description="share of argmax decisions that must match")


class QuantizeConfig(_Config):
    """`slimcv quantize`: which INT8 variants to build, how to calibrate, and the accuracy budget for the choice."""

    source: str = Field(..., description="run folder (or registered model name) of the FP32 model")
    data: DataConfig = Field(default_factory=DataConfig)
    out_dir: str = "runs/quantize"
    calibration: tuple[Literal["minmax", "entropy", "percentile"], ...] = ("minmax",)
    calibration_images: int = Field(64, ge=0, description="real training images for calibration")
    percentile: float = Field(99.999, gt=50, le=100)
    per_channel: bool = True
    reduce_range: bool = Field(True, description="7-bit weights: avoids u8s8 saturation on CPUs without VNNI")
    exclude: tuple[str, ...] = Field((), description="layers (module paths or ONNX node names) kept in FP32")
    fp32_ends: bool = Field(False, description="also keep the first and the last convolution or linear layer in "
                            "FP32 (the image's and the scores' layers: most of INT8's loss, a few percent of its time)")
    dynamic: bool = False
    nncf: bool = Field(True, description="also build OpenVINO INT8 with NNCF's quantize (where openvino and nncf "
                       "are installed)")
    qat_epochs: int = Field(0, ge=0, description="epochs of quantization-aware fine-tuning (0: no QAT)")
    qat_optim: OptimConfig = Field(default_factory=lambda: OptimConfig(name="sgd", lr=1e-3, momentum=0.9))
    opset: int = 17
    threads: int | None = Field(None, ge=1, description="threads for every runtime (default: torch's)")
    latency_runs: int = Field(20, ge=1)
    eager: bool = Field(True, description="also evaluate and time the PyTorch model")
    max_drop: float = Field(1.0, ge=0, description="accuracy/mIoU points the recommended model may lose (as in compress)")
    seed: int = 0
    progress: bool = True


class SearchSpace(_Config):
    """What `compress` tries: pruned copies of the source, students, the runtimes and which kinds go INT8."""

    prune_ratios: tuple[float, ...] = Field((0.25, 0.35, 0.5, 0.7), description="layer-uniform pruned copies "
                                            "(fraction of channels removed)")
    students: tuple[tuple[str, dict[str, Any]], ...] | None = Field(
        None, description="students as (model, kwargs); default: CPU-efficient families sized for the task")
    runtimes: tuple[str, ...] | None = Field(None, description="runtimes each network is timed in (default: ONNX "
                                              "Runtime and OpenVINO)")
    int8: tuple[Literal["source", "pruned", "student"], ...] = Field(
        ("source", "pruned", "student"), description="kinds also tried as NNCF INT8 files in OpenVINO")
    int8_always: bool = Field(False, description="time the INT8 file of every network of those kinds; by default "
                              "only where it can change the answer (its FP32 file misses the budget, and the "
                              "source's INT8 speed-up would bring it close)")
    sensitivity_drops: tuple[float, ...] = Field(
        (1.0, 3.0), description="sensitivity-guided pruned copies: per layer the largest ratio whose drop (that "
        "layer alone, points) stays within each")
    sensitivity_ratios: tuple[float, ...] = (0.25, 0.5, 0.75)
    round_to: int = Field(8, ge=1, description="pruned copies keep channel counts at multiples of this (8 ran "
                          "fastest on the CPUs measured; a smaller value lets a narrow network shrink further)")


class CompressConfig(_Config):
    """`slimcv compress`: the latency target, the time to spend on the search and the accuracy it may cost."""

    target_speedup: float | None = Field(None, gt=0, description="N times lower batch-1 latency than the source in "
                                         "ONNX Runtime FP32 on this machine")
    target_latency: float | None = Field(None, gt=0, description="batch-1 latency on this machine, milliseconds")
    budget_minutes: float | None = Field(None, gt=0, description="time for the whole search (default: as long as "
                                         "the source took to train, 30 min when unknown)")
    max_drop: float = Field(1.0, ge=0, description="accuracy/mIoU points the result may lose against the source")
    teacher_epochs: int = Field(10, ge=1, description="epochs to train a model given by name only, first")
    proxy_epochs: int = Field(1, ge=1, description="epochs of each candidate's first, ranking run")
    finalists: int = Field(4, ge=1, description="candidates that go on from their proxy runs into successive "
                           "halving; the last one left trains with the rest of the time")
    finalist_gap: float | None = Field(5.0, ge=0, description="no finalist trails the best proxy by more points")
    frontier_share: float = Field(0.0, ge=0, lt=1, description="while no proxy is within max_drop, this share of the "
                                  "time left trains a pruned copy that misses the target but runs faster than the "
                                  "source, so a miss still names a trained point within max_drop (0: off; the time "
                                  "comes from the finalists)")
    latency_runs: int = Field(15, ge=1, description="timed batch-1 runs per candidate and runtime")
    threads: int | None = Field(1, ge=1, description="threads for training and timing (1: robust on a shared "
                                "machine)")
    device: str = Field("auto", description="where candidates train: auto (a GPU when present), cpu or cuda; "
                        "latency is always measured on this machine's CPU")
    out_dir: str = "runs/compress"
    space: SearchSpace = Field(default_factory=SearchSpace)
    report: bool = Field(True, description="write an HTML report of the source beside the winner")
    report_images: int = Field(4, ge=0, description="overlay images in the report")
    progress: bool = True

    @model_validator(mode="after")
    def _one_target(self):
        if (self.target_speedup is None) == (self.target_latency is None):
            raise ValueError("give one target: target_speedup (N times faster) or target_latency (milliseconds)")
        return self


class BenchConfig(_Config):
    """How `bench` measures (the CLI's flags are made from these fields)."""

    runtimes: tuple[str, ...] | None = Field(None, description="runtimes from the table: eager, eager-bf16, "
                                             "eager-cuda, ort, ort-cuda, ort-tensorrt, openvino, openvino-f32 (default: every one "
                                             "this machine can run on its CPU); one it cannot run is noted and skipped")
    batch_sizes: tuple[int, ...] = Field((1, 8), description="throughput at these batch sizes")
    warmup: int = Field(3, ge=0, description="untimed calls per model and runtime first")
    runs: int = Field(20, ge=1, description="timed calls per model and runtime at batch 1")
    threads: int | None = Field(None, ge=1, description="intra-op threads for every runtime (default: torch's)")
    memory: bool = Field(True, description="probe peak memory (one process per row)")
    out: str | None = Field(None, description="write the results as JSON here")


class ReportConfig(_Config):
    """What `report` compares and how (the CLI's flags are made from these fields)."""

    out: str = Field("report", description="folder for report.html, report.md and figures/")
    baseline: str | None = Field(None, description="model the deltas are against (default: the first)")
    bench: tuple[str, ...] | None = Field(None, description="latencies from a `slimcv bench --out` file")
    measure: bool | Literal["all"] = Field(False, description="time the models that have no latency yet (all: "
                                           "every model again, in one interleaved run)")
    images: int = Field(4, ge=0, description="validation images in the overlays")
    predict: bool = Field(True, description="run the models for overlays")
    threads: int | None = Field(None, ge=1, description="threads for timing and predictions (default: torch's)")
    title: str | None = Field(None, description="the page's title")


class RunOptions(_Config):
    """`slimcv run`: where and how far a recipe runs (the recipe itself holds the rest)."""

    out_dir: str | None = Field(None, description="run directory (default: the recipe's out_dir, else runs/<name>)")
    until: str | None = Field(None, description="stop after this stage")
    dry_run: bool = Field(False, description="validate and show what would run, skip or resume")
    threads: int | None = Field(None, ge=1, description="intra-op threads of every stage that sets none itself "
                                "(default: torch's)")


class DemoConfig(_Config):
    """`slimcv demo`: the whole chain on built-in data."""

    data: str = Field("synthetic-shapes", description="synthetic-shapes (no download) or camvid:PATH")
    out_dir: str = Field("runs/demo", description="where the demo's runs and report go")
    quick: bool = Field(False, description="a smoke test: tiny images, few epochs, under a minute")
    threads: int = Field(1, ge=1, description="intra-op threads per stage (1: robust on a shared machine, see "
                         "docs/recipes.md)")


class CheckDataConfig(_Config):
    """`slimcv check-data`: which split to scan and what to report."""

    split: str = Field("train", description="split to scan")
    limit: int | None = Field(None, ge=1, description="scan only N samples, spread evenly over the split")
    class_weights: bool = Field(False, description="also compute median-frequency class weights")
    out: str | None = Field(None, description="write the report as JSON here")


class EvalConfig(_Config):
    """`slimcv eval`: the data and the device a model is scored on."""

    data: str | None = Field(None, description="dataset spec (default: the model folder's own data settings)")
    size: Size = Field(None, description="resize images to H W for the model")
    batch_size: int = Field(4, ge=1, description="images per batch")
    split: str = Field("val", description="split to score on")
    out: str | None = Field(None, description="write the metrics as JSON here")
    device: str = Field("auto", description="auto, cpu or cuda")
    threads: int | None = Field(None, ge=1, description="intra-op threads (default: torch's)")


class ModelsConfig(_Config):
    """`slimcv models`: which models to list."""

    task: Literal["classification", "segmentation", "detection"] | None = Field(None, description="only models of this task")
