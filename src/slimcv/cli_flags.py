"""The CLI's flags, one table per command: each row is a flag and the config key it sets.

The same table adds the flags to the parser and builds the config dict from the parsed arguments, so a new
config field is one row; help text defaults to the field's description and default in the config model.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Flag:
    """``names`` set config ``key`` (dotted); ``value`` maps the parsed value when the key's form differs."""

    names: tuple[str, ...]
    key: str
    kw: dict[str, Any] = field(default_factory=dict)
    value: Callable[[Any], Any] | None = None
    attr: str | None = None  # the parsed attribute's name, where the command reads it before its config is built

    @property
    def dest(self) -> str:
        return self.attr or "cfg__" + self.key.replace(".", "__")


def check_size(v: Sequence[int]) -> Any:
    """--size as a config value: one N or [H, W], positive."""
    from slimcv.errors import SlimcvError

    if len(v) not in (1, 2):
        raise SlimcvError(f"--size takes one or two numbers (H W), got {len(v)}.")
    if any(n < 1 for n in v):
        raise SlimcvError(f"--size {' '.join(map(str, v))}: sizes are positive pixel counts, e.g. --size 176 240.")
    return v[0] if len(v) == 1 else list(v)


TRAIN = (
    Flag(("--model",), "model", {"help": "model name (see `slimcv models`) or package.module:factory"}),
    Flag(("--weights",), "weights", {"help": "local weights file to start from"}),
    Flag(("--data",), "data.spec", {"help": "dataset spec, e.g. camvid:PATH, cifar10:PATH, synthetic-shapes"}),
    Flag(("--epochs",), "epochs", {"type": int}),
    Flag(("--batch-size", "-b"), "data.batch_size", {"type": int}),
    Flag(("--lr",), "optim.lr", {"type": float}),
    Flag(("--opt",), "optim.name", {"choices": ["sgd", "adam", "adamw"]}),
    Flag(("--weight-decay", "--wd"), "optim.weight_decay", {"type": float}),
    Flag(("--sched",), "schedule.name", {"choices": ["cosine", "step", "poly", "constant"]}),
    Flag(("--size",), "data.size", {"type": int, "nargs": "+", "metavar": "N",
                                    "help": "training size: H W (or one N)"}, check_size),
    Flag(("--augment",), "data.augment", {"nargs": "*",
                                          "help": "augmentations: hflip rotate shift scale_crop pad_crop color_jitter"}),
    Flag(("--workers", "-j"), "data.workers", {"type": int}),
    Flag(("--amp",), "amp", {"choices": ["auto", "none", "fp16", "bf16"]}),
    Flag(("--channels-last",), "channels_last", {"action": argparse.BooleanOptionalAction}),
    Flag(("--speed-probe",), "speed_probe", {"action": argparse.BooleanOptionalAction}),
    Flag(("--deterministic",), "deterministic", {"action": "store_true"}),
    Flag(("--seed",), "seed", {"type": int}),
    Flag(("--device",), "device", {}),
    Flag(("--threads",), "threads", {"type": int}),
    Flag(("--out-dir", "-o"), "out_dir", {}),
    Flag(("--resume",), "resume", {"action": "store_true", "help": "continue the run in --out-dir"}),
)

DISTILL = (
    Flag(("--teacher",), "teacher", {"help": "teacher model folder, or model name (with --teacher-weights)"}),
    Flag(("--teacher-weights",), "teacher_weights", {"help": "local weights file for a teacher given by name"}),
    Flag(("--mode",), "mode", {"choices": ["online", "offline"], "help": "online: teacher runs beside the "
                               "student; offline: its maps are computed once and cached"}),
    Flag(("--alpha", "--ce-weight"), "alpha", {"type": float, "help": "weight of the cross-entropy on hard "
                                               "labels: loss = alpha * CE + sum of weight * KD (torchdistill's and "
                                               "Hinton's alpha weights the KD term instead)"}),
    Flag(("--kd-weight",), "kd_weight", {"type": float, "help": "weight of every KD loss (the WEIGHT of "
                                         "--loss NAME:WEIGHT)"}),
    Flag(("--kd-warmup-epochs",), "kd_warmup_epochs", {"type": float, "help": "raise the KD weight linearly "
                                                       "from 0 over this many epochs"}),
    Flag(("--cache-dir",), "cache.dir", {"help": "where offline teacher maps are stored"}),
    Flag(("--unlabelled",), "unlabelled", {"metavar": "SPEC_OR_FOLDER", "help": "images without labels the "
                                           "student also learns from the teacher (a folder, or a dataset spec)"}),
)


def _epochs_or_auto(text: str) -> int | str:
    """A count of epochs, or 'auto'."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of epochs or 'auto', got {text!r}") from None


PRUNE = (
    Flag(("--remove",), "remove", {"type": float, "help": "fraction of params/MACs/latency to remove"}),
    Flag(("--target",), "target", {"choices": ["params", "macs", "latency"],
                                   "help": "what --remove is a fraction of (latency: batch-1 eager, measured)"}),
    Flag(("--method",), "method", {"choices": ["hard", "soft"],
                                   "help": "hard: prune then fine-tune; soft: soft filter pruning (SFP)"}),
    Flag(("--steps",), "steps", {"type": int}),
    Flag(("--importance",), "importance", {"help": "l1, l2, bn_scale, taylor, activation or apoz"}),
    Flag(("--global-pruning",), "global_pruning", {"action": "store_true"}),
    Flag(("--min-channels",), "min_channels", {"type": int}),
    Flag(("--round-to",), "round_to", {"type": int}),
    Flag(("--ignore",), "ignore", {"nargs": "*", "metavar": "LAYER", "help": "layer names never pruned"}),
    Flag(("--finetune-epochs",), "finetune_epochs", {"type": _epochs_or_auto, "metavar": "N|auto",
                                                     "help": "epochs after each step; auto: scaled to what the "
                                                     "step removed"}),
    Flag(("--lr",), "optim.lr", {"type": float}),
    Flag(("--sensitivity",), "sensitivity", {"type": float, "nargs": "*", "metavar": "RATIO"}),
    Flag(("--max-drop",), "max_drop", {"type": float}),
    Flag(("--latency-runs",), "latency_runs", {"type": int}),
    Flag(("--device",), "device", {}),
    Flag(("--seed",), "seed", {"type": int}),
    Flag(("--out-dir", "-o"), "out_dir", {}),
)

QUANTIZE = (
    Flag(("--out-dir", "-o"), "out_dir", {}),
    Flag(("--calibration",), "calibration", {"nargs": "*", "choices": ["minmax", "entropy", "percentile"],
                                             "help": "static PTQ calibration methods, one INT8 model each "
                                             "(none: skip static PTQ)"}),
    Flag(("--calibration-images",), "calibration_images", {"type": int}),
    Flag(("--percentile",), "percentile", {"type": float}),
    Flag(("--exclude",), "exclude", {"nargs": "*", "metavar": "LAYER"}),
    Flag(("--fp32-ends",), "fp32_ends", {"action": "store_true", "help": "keep the first and the last convolution "
                                         "or linear layer in FP32 in the static and NNCF INT8 files"}),
    Flag(("--per-tensor",), "per_channel", {"action": "store_true", "help": "per-tensor weights "
                                            "(default: per-channel)"}, lambda v: not v),
    Flag(("--no-reduce-range",), "reduce_range", {"action": "store_true", "help": "full 8-bit weights "
                                                  "(only on CPUs with VNNI/AMX: AVX2 saturates)"}, lambda v: not v),
    Flag(("--dynamic",), "dynamic", {"action": "store_true"}),
    Flag(("--no-nncf",), "nncf", {"action": "store_true", "help": "skip OpenVINO INT8 by NNCF (built by default "
                                  "where openvino and nncf are installed)"}, lambda v: not v),
    Flag(("--qat-epochs",), "qat_epochs", {"type": int}),
    Flag(("--qat-lr",), "qat_optim", {"type": float, "help": "SGD (momentum 0.9) learning rate of QAT"},
         lambda v: {"name": "sgd", "lr": v, "momentum": 0.9}),
    Flag(("--opset",), "opset", {"type": int}),
    Flag(("--threads",), "threads", {"type": int}),
    Flag(("--latency-runs",), "latency_runs", {"type": int}),
    Flag(("--max-drop",), "max_drop", {"type": float}),
    Flag(("--no-eager",), "eager", {"action": "store_true", "help": "skip evaluating and timing the PyTorch "
                                    "model"}, lambda v: not v),
)

EXPORT = (
    Flag(("--static-batch",), "batch", {"type": int, "metavar": "N", "help": "fixed batch size (default: dynamic)"}),
    Flag(("--static",), "dynamic_hw", {"action": "store_true", "help": "fixed height/width (default: dynamic for "
                                       "segmentation)"}, lambda v: not v),
    Flag(("--size",), "size", {"type": int, "nargs": 2, "metavar": ("H", "W"),
                               "help": "example size (default: the eval size)"}, check_size),
    Flag(("--opset",), "opset", {"type": int}),
    Flag(("--exporter",), "exporter", {"choices": ["torchscript", "dynamo"]}),
    Flag(("--simplify",), "simplify", {"action": "store_true", "help": "constant-fold and drop dead nodes "
                                       "(onnxscript)"}),
    Flag(("--no-check",), "check", {"action": "store_true", "help": "skip the ONNX Runtime agreement check"},
         lambda v: not v),
)


def add_flags(parser: argparse.ArgumentParser, flags: Sequence[Flag], schema: Any) -> None:
    """Add each row of ``flags``; help without its own text shows the field's description and default."""
    for f in flags:
        kw = dict(f.kw)
        kw.setdefault("help", describe(schema, f.key))
        if kw.get("action") not in ("store_true", argparse.BooleanOptionalAction) and "choices" not in kw:
            kw.setdefault("metavar", f.names[0].lstrip("-").replace("-", "_").upper())
        default = field_default(schema, f.key)
        if default is not None and "default" not in kw["help"] and kw.get("action") != "store_true":
            shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
            kw["help"] = f"{kw['help']} (default {shown})".strip()
        parser.add_argument(*f.names, dest=f.dest, default=None, **kw)


def values(args: argparse.Namespace, flags: Sequence[Flag]) -> dict[str, Any]:
    """The config dict the given flags set (unset flags leave the config's own defaults)."""
    out: dict[str, Any] = {}
    for f in flags:
        v = getattr(args, f.dest, None)
        if v is None or (f.kw.get("action") == "store_true" and v is False):
            continue
        node = out
        *parents, last = f.key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = f.value(v) if f.value else v  # flag values are taken as given, not parsed as YAML
    return out


def _field(schema: Any, key: str):
    """The field ``key`` (dotted) of a pydantic model or a dataclass, or None."""
    import dataclasses

    if dataclasses.is_dataclass(schema):
        found = {f.name: f for f in dataclasses.fields(schema)}.get(key)
        return _DataclassField(found) if found is not None else None
    node: Any = schema
    info = None
    for part in key.split("."):
        fields = getattr(node, "model_fields", {})
        if part not in fields:
            return None
        info = fields[part]
        node = info.annotation if isinstance(info.annotation, type) else None
        if node is None and info.default_factory is not None:
            node = type(info.default_factory())
    return info


class _DataclassField:
    """A dataclass field seen like a pydantic one: its description (``metadata["help"]``) and default."""

    def __init__(self, f) -> None:
        import dataclasses

        self.description = f.metadata.get("help", "")
        self.default_factory = None if f.default_factory is dataclasses.MISSING else f.default_factory
        self.default = ... if f.default is dataclasses.MISSING else f.default


def describe(schema: Any, key: str) -> str:
    info = _field(schema, key)
    return (info.description or "") if info is not None else ""


def field_default(schema: Any, key: str) -> Any:
    info = _field(schema, key)
    if info is None:
        return None
    if info.default_factory is not None:
        return None
    d = info.default
    return None if d is None or d is ... or isinstance(d, (list, tuple, dict)) and not d else d


COMPRESS = (
    Flag(("--budget-minutes",), "budget_minutes", {"type": float, "metavar": "M"}),
    Flag(("--max-drop",), "max_drop", {"type": float}),
    Flag(("--teacher-epochs",), "teacher_epochs", {"type": int}),
    Flag(("--threads",), "threads", {"type": int}),
    Flag(("--out-dir", "-o"), "out_dir", {}),
    Flag(("--no-report",), "report", {"action": "store_true", "help": "skip the HTML report"}, lambda v: not v),
)


def _not(v: bool) -> bool:
    return not v


BENCH = (
    Flag(("--runtimes",), "runtimes", {"nargs": "+", "metavar": "RUNTIME"}),
    Flag(("--batch-sizes",), "batch_sizes", {"type": int, "nargs": "+", "metavar": "N"}),
    Flag(("--warmup",), "warmup", {"type": int}),
    Flag(("--runs",), "runs", {"type": int}),
    Flag(("--threads",), "threads", {"type": int}),
    Flag(("--no-memory",), "memory", {"action": "store_true", "help": "skip the peak-memory probe (one process per "
                                      "row)"}, _not),
    Flag(("--out", "-o"), "out", {}),
)

REPORT = (
    Flag(("--out", "-o"), "out", {}),
    Flag(("--baseline",), "baseline", {}),
    Flag(("--bench",), "bench", {"action": "append", "metavar": "JSON"}),
    Flag(("--measure",), "measure", {"action": "store_true", "help": "time the models that have no latency yet"}),
    Flag(("--images",), "images", {"type": int}),
    Flag(("--no-predict",), "predict", {"action": "store_true", "help": "do not run the models (no overlays)"},
         _not),
    Flag(("--threads",), "threads", {"type": int}),
    Flag(("--title",), "title", {}),
)

# what predict and serve share: how a deployed file runs and which inputs and boxes it takes
DEPLOYED = (
    Flag(("--max-pixels",), "max_pixels", {"type": int, "metavar": "N"}),
    Flag(("--score-threshold",), "score_threshold", {"type": float, "metavar": "S"}),
    Flag(("--runtime",), "runtime", {}),
    Flag(("--threads",), "threads", {"type": int}),
)

PREDICT = (
    Flag(("--out", "-o"), "out_dir", {"required": True}),
    Flag(("--batch-size", "-b"), "batch_size", {"type": int}),
    Flag(("--topk",), "topk", {"type": int}),
    Flag(("--no-overlay",), "overlays", {"action": "store_true", "help": "segmentation: write the masks only"}, _not),
    Flag(("--alpha",), "alpha", {"type": float}),
    *DEPLOYED,
)

SERVE = (
    Flag(("--max-batch-size",), "max_batch_size", {"type": int}),
    Flag(("--max-wait-ms",), "max_wait_ms", {"type": float}),
    Flag(("--queue-size",), "queue_size", {"type": int}),
    Flag(("--max-upload-mb",), "max_upload_mb", {"type": float}),
    *DEPLOYED,
)

RUN = (
    Flag(("--out-dir", "-o"), "out_dir", {}),
    Flag(("--until",), "until", {"metavar": "STAGE"}),
    Flag(("--dry-run",), "dry_run", {"action": "store_true", "help": "validate and show what would run, skip or "
                                     "resume"}),
    Flag(("--threads",), "threads", {"type": int, "metavar": "N"}, attr="threads"),  # set for the process first
)

DEMO = (
    Flag(("--data",), "data", {}),
    Flag(("--out-dir", "-o"), "out_dir", {}),
    Flag(("--quick",), "quick", {"action": "store_true", "help": "a smoke test: tiny images, few epochs, under a "
                                 "minute; its numbers mean nothing"}),
    Flag(("--threads",), "threads", {"type": int, "metavar": "N"}),
)

CHECK_DATA = (
    Flag(("--split",), "split", {}),
    Flag(("--limit",), "limit", {"type": int}),
    Flag(("--class-weights",), "class_weights", {"action": "store_true", "help": "also compute median-frequency "
                                                 "class weights"}),
    Flag(("--out", "-o"), "out", {}),
)

EVAL = (
    Flag(("--data",), "data", {}),
    Flag(("--size",), "size", {"type": int, "nargs": "+", "metavar": "N"}, check_size),
    Flag(("--batch-size", "-b"), "batch_size", {"type": int}),
    Flag(("--split",), "split", {}),
    Flag(("--out", "-o"), "out", {}),
    Flag(("--device",), "device", {}),
    Flag(("--threads",), "threads", {"type": int, "metavar": "N"}, attr="threads"),  # set for the process first
)

MODELS = (
    Flag(("--task",), "task", {"choices": ["classification", "segmentation", "detection"]}),
)
