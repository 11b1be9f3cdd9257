"""The ``distill`` stage: train a student on hard labels plus a teacher's soft outputs (online or cached)."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Subset

from slimcv._console import print_table
from slimcv._io import atomic_write_json
from slimcv.bench.macs import count_macs, count_params
from slimcv.config import DistillConfig, LossSpec
from slimcv.data import DataBundle, as_bundle
from slimcv.engine import distributed as D
from slimcv.engine.loop import SupervisedLoss, evaluate, match_size
from slimcv.engine.train import (TrainResult, check_task, class_weights, fit, make_eval_loader, seed_everything,
                                sized_kwargs)
from slimcv.artifact import (check_rebuildable, is_weights_file, metric_key, module_spec, resolve_model,
                             source_label, stage_config)
from slimcv.errors import SlimcvError
from slimcv.distill.features import FeatureDistiller
from slimcv.distill.losses import KD_LOSSES, default_temperature
from slimcv.distill.unlabelled import labelled_share, split_targets
from slimcv.distill.teacher_cache import CacheFormat, CachedTeacherDataset, auto_scale, build_cache, soft_to_logits
from slimcv.models import create_model, load_weights
from slimcv.run_folder import COMPARISON_JSON, TEACHER_CACHE


@dataclass
class DistillResult:
    """The student's training result plus the teacher-vs-student comparison."""

    train: TrainResult
    comparison: list[dict[str, Any]]
    cache: Path | None = None

    @property
    def model(self) -> nn.Module | None:
        return self.train.model

    @property
    def metrics(self) -> dict[str, Any]:
        return self.train.metrics

    @property
    def run_dir(self) -> Path:
        return self.train.run_dir


def distill(source: Any, data: Any = None, *, teacher: Any = None, weights: str | None = None,
            teacher_weights: str | None = None, **options: Any) -> DistillResult:
    """Train a student from a teacher with CE * alpha + the weighted KD losses.

    ``source`` is a DistillConfig (or its dict), or the student itself: an ``nn.Module`` (trained in place), a
    model name or ``package.module:factory``. ``teacher`` is a module, a model folder, or a name / factory with
    ``teacher_weights``; ``options`` are DistillConfig fields, e.g.
    ``distill(small_net, teacher=big_net, data=(train_ds, val_ds), epochs=30, mode="online")``."""
    named = isinstance(source, (DistillConfig, dict))  # the config names the student and the teacher
    if not named and teacher is None:
        raise SlimcvError("distill needs a teacher: distill(student, teacher=TEACHER, data=...).")
    given = {} if named else {"teacher": source_label(teacher) if not isinstance(teacher, str) else teacher}
    cfg, student_src = stage_config(DistillConfig, source, {**given, **options}, "distill", model_field="model",
                                    defaults={"out_dir": None})
    if named:
        student_src = cfg.model
        teacher_src = teacher if teacher is not None else cfg.teacher
        data = data if data is not None else cfg.data
    else:
        teacher_src = teacher
        if data is None:
            data = cfg.data if "data" in options else None
    if cfg.out_dir is None:
        with tempfile.TemporaryDirectory(prefix="slimcv-distill-") as tmp:
            result = _distill(cfg.model_copy(update={"out_dir": tmp, "tensorboard": False}), student_src,
                              teacher_src, data, weights, teacher_weights, keep=False)
        return result
    return _distill(cfg, student_src, teacher_src, data, weights, teacher_weights, keep=True)


def _distill(cfg: DistillConfig, student_src: Any, teacher_src: Any, data: Any, weights: str | None,
             teacher_weights: str | None, keep: bool) -> DistillResult:
    if isinstance(student_src, nn.Module):
        from slimcv.models.detection import is_detector
        from slimcv.models.tv import plain_logits

        if not is_detector(student_src):
            student_src = plain_logits(student_src)
        data = as_bundle(data, model=student_src)
    else:
        data = as_bundle(data)
        check_task(str(student_src), data)
    if data.config is not cfg.data and not data.config.spec.startswith("python:"):
        cfg = cfg.model_copy(update={"data": data.config})  # the data given is the data recorded (and batched)
    if data.task == "classification":
        from slimcv.distill.losses import DENSE_ONLY

        dense = [ls.name for ls in cfg.losses if ls.name in DENSE_ONLY]
        if dense:
            raise SlimcvError(f"Loss {dense[0]!r} compares pixel maps and works on segmentation only; use kd, dkd or "
                              "dist for classification.")
    ce_weights = class_weights(cfg, data) if data.task != "detection" else None  # from the labelled images only
    if cfg.unlabelled:
        from slimcv.distill.unlabelled import add_unlabelled

        data = add_unlabelled(data, cfg.unlabelled)
    if cfg.mode == "offline" and data.config.spec.startswith("python:"):
        raise SlimcvError("Offline distillation caches the teacher's maps per file of a dataset spec; with your own "
                          "Dataset use mode='online'.")
    device = D.pick_device(cfg.device, cfg.threads)
    teacher, teacher_spec = load_teacher(cfg, data.num_classes, teacher_src, teacher_weights)
    teacher.to(device).eval().requires_grad_(False)
    seed_everything(cfg.seed, cfg.deterministic)
    if isinstance(student_src, nn.Module):
        student = student_src
        if weights is not None:
            load_weights(student, weights)
        student_spec = module_spec(student, data.num_classes, data.task, cfg.model_kwargs)
        if keep:
            check_rebuildable(student, student_spec)
    else:
        kwargs = sized_kwargs(cfg.model, data, cfg.model_kwargs)
        student = create_model(cfg.model, data.num_classes, weights=weights or cfg.weights, **kwargs)
        student_spec = {"name": cfg.model, "num_classes": data.num_classes, "kwargs": kwargs}
    cache_path = None
    warmup = round(cfg.kd_warmup_epochs * steps_per_epoch(data, cfg))
    if data.task == "detection":
        from slimcv.distill.detection import detection_objective

        objective = features = detection_objective(cfg, student, teacher, data, warmup)
    else:
        if cfg.mode == "offline":
            data, cache_path = with_teacher_cache(teacher, data, cfg, device)
        features = _features(cfg, student, teacher, data)
        objective = DistillObjective(None if cfg.mode == "offline" else teacher, cfg.losses, cfg.alpha,
                                     data.info.ignore_index, ce_weights, features, warmup_steps=warmup)
    spec = {**student_spec, "task": data.task, "teacher": teacher_spec}
    if isinstance(student_src, nn.Module):
        cfg = cfg.model_copy(update={"model": spec["name"]})  # labels config.json; the module is what trains
    result = fit(student, data, cfg, objective, model_spec=spec)
    if features is not None:
        features.remove()
    comparison = compare_models({"teacher": teacher, "student": result.model}, data, cfg, device)
    if D.is_main():
        atomic_write_json(Path(cfg.out_dir) / COMPARISON_JSON, comparison)
        print_comparison(comparison, data.task)
    return DistillResult(result, comparison, cache_path)


class DistillObjective(nn.Module):
    """alpha * CE(student, labels) + ramp * sum_i weight_i * loss_i(student, teacher); the teacher is frozen and
    is not a sub-module (its weights stay out of checkpoints and the optimizer). ``ramp`` rises linearly from 0 to
    1 over the first ``warmup_steps`` training steps (1 without a warm-up); the step count is checkpointed."""

    def __init__(self, teacher: nn.Module | None, losses: tuple[LossSpec, ...], alpha: float, ignore_index: int,
                 weights: list[float] | None, features: FeatureDistiller | None, warmup_steps: int = 0) -> None:
        super().__init__()
        self.warmup_steps = warmup_steps
        if warmup_steps:
            self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.__dict__["teacher"] = teacher
        self.losses = [spec for spec in losses if spec.name != "feature"]
        self.feature_weight = sum(spec.weight for spec in losses if spec.name == "feature")
        self.alpha = alpha
        self.ignore_index = ignore_index
        self.ce = SupervisedLoss(ignore_index, weights)
        self.features = features

    def forward(self, model: nn.Module, images: torch.Tensor, targets) -> dict[str, torch.Tensor]:
        soft = None
        if isinstance(targets, (tuple, list)):
            targets, soft = targets
        student = model(images)
        if soft is not None:
            teacher = soft_to_logits(soft)
        else:
            if self.teacher is None:
                raise SlimcvError("Offline distillation needs batches with cached teacher maps.")
            with torch.no_grad():
                teacher = self.teacher(images)
        s, t = match_size(student, targets), match_size(teacher, targets)
        labelled, kd_targets = split_targets(targets, self.ignore_index)  # images without labels: KD only
        terms = {"ce": self.ce.ce(student, labelled) * labelled_share(labelled, kd_targets, self.ignore_index)}
        kd = student.new_zeros(())
        for spec in self.losses:
            out = KD_LOSSES.get(spec.name)(s, t, kd_targets, temperature=spec.temperature or default_temperature(s),
                                           ignore_index=self.ignore_index, **spec.params)
            terms[spec.name] = out["loss"]
            kd = kd + spec.weight * out["loss"]
        if self.features is not None:
            terms["feature"] = self.features()
            kd = kd + self.feature_weight * terms["feature"]
        total = self.alpha * terms["ce"] + self._ramp() * kd
        return {"loss": total, **{k: v.detach() for k, v in terms.items()}}

    def _ramp(self) -> float:
        if not self.warmup_steps or not self.training:
            return 1.0
        self.steps += 1
        return min(1.0, self.steps.item() / self.warmup_steps)


def steps_per_epoch(data: DataBundle, cfg: DistillConfig) -> int:
    """Optimizer steps in one epoch on this process (the training loader drops the last partial batch)."""
    return max(1, len(data.train) // (cfg.data.batch_size * D.world_size()))


def load_teacher(cfg: DistillConfig, num_classes: int, source: Any = None,
                 weights: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The teacher: a module, a model folder, or a model name / factory with its weights file."""
    source = cfg.teacher if source is None else source
    weights = weights or cfg.teacher_weights
    if isinstance(source, (str, Path)) and not Path(source).is_dir() and weights is None and not is_weights_file(
            source):
        if Path(source).suffix or "/" in str(source):
            raise SlimcvError(f"Teacher {source} does not exist; give the teacher's model folder, or a model name "
                              "with --teacher-weights FILE.")
        raise SlimcvError(f"Teacher {source!r} has no weights: pass a teacher model folder, or teacher_weights "
                          "with a local weights file (an untrained teacher teaches nothing).")
    loaded = resolve_model(source, weights=weights, num_classes=num_classes, kwargs=cfg.teacher_kwargs)
    if loaded.spec.get("num_classes") not in (None, num_classes):
        raise SlimcvError(f"Teacher {source_label(source)} predicts {loaded.spec['num_classes']} classes but the data "
                          f"has {num_classes}; use a teacher trained on this dataset.")
    origin = str(loaded.folder or weights or source_label(source))
    return loaded.model, {**loaded.spec, "source": origin}


def with_teacher_cache(teacher: nn.Module, data: DataBundle, cfg: DistillConfig, device) -> tuple[DataBundle, Path]:
    """Build (or reuse) the teacher cache and return data whose training samples carry the maps."""
    if data.task != "segmentation":
        raise SlimcvError("Offline (cached) distillation stores dense teacher maps: it supports segmentation; "
                          "use mode: online for classification.")
    train = data.train
    base = train.dataset if isinstance(train, Subset) else train
    if isinstance(train, Subset):  # a subset: the teacher runs on those samples only, not the whole split
        import hashlib

        indices = [int(i) for i in train.indices]
        from slimcv.distill.unlabelled import IndexedView

        base = IndexedView(base, indices)
        picked = {"subset": len(indices), "indices_sha1": hashlib.sha1(repr(indices).encode()).hexdigest()[:12]}
    else:
        picked = {}
    size = data.config.size or data.info.native_size
    scale = cfg.cache.scale
    if scale == "auto":
        hw = size if size is not None else tuple(base.load(0)[0].shape[-2:])
        hw = tuple(hw) if isinstance(hw, (list, tuple)) else (hw, hw)
        scale = auto_scale(len(base), data.num_classes, hw, cfg.cache.dtype, cfg.cache.topk)
    fmt = CacheFormat(scale, cfg.cache.dtype, cfg.cache.topk)
    data_id = {"spec": data.config.spec, "split": data.config.train_split, "options": data.config.options,
               "size": size, "mean": data.info.mean, "std": data.info.std, "samples": len(base), **picked,
               **getattr(base, "cache_id", {})}
    root = cfg.cache.dir or (Path(cfg.out_dir) / TEACHER_CACHE if cfg.out_dir else _temporary_cache_root())
    cache = build_cache(teacher, base, root, size=size if size is None else tuple(
        size if isinstance(size, (list, tuple)) else (size, size)), mean=data.info.mean, std=data.info.std,
        num_classes=data.num_classes, fmt=fmt, data_id=data_id, device=device)
    wrapped = CachedTeacherDataset(base, cache, base.transform)
    return DataBundle(train=wrapped, val=data.val, info=data.info, config=data.config), cache.path


def _temporary_cache_root() -> Path:
    """Where the maps go for a student that is not saved (out_dir None): a folder removed when Python exits."""
    import atexit
    import shutil

    root = Path(tempfile.mkdtemp(prefix="slimcv-teacher-cache-"))
    atexit.register(shutil.rmtree, root, True)
    return root


def _features(cfg: DistillConfig, student: nn.Module, teacher: nn.Module, data: DataBundle):
    specs = [s for s in cfg.losses if s.name == "feature"]
    if not specs:
        return None
    if cfg.mode == "offline":
        raise SlimcvError("Feature distillation needs the teacher's intermediate layers: use mode: online.")
    pairs = [pair for s in specs for pair in s.layers]
    sample = data.train[0][0][None]
    device = next(teacher.parameters()).device
    student.to(device)
    return FeatureDistiller(student, teacher, pairs, sample.to(device))


@torch.no_grad()
def compare_models(models: dict[str, nn.Module], data: DataBundle, cfg, device) -> list[dict[str, Any]]:
    """Validation metric, per-class scores, parameters and MACs of each model, side by side."""
    loader = make_eval_loader(data.val, cfg.data.eval_batch_size or cfg.data.batch_size, cfg.data.loader_workers(),
                              data.info.ignore_index)
    image = data.val[0][0]
    rows = []
    for name, model in models.items():
        m = evaluate(model, loader, device, task=data.task, num_classes=data.num_classes,
                     ignore_index=data.info.ignore_index, class_names=data.info.class_names)
        key = metric_key(data.task)
        rows.append({"model": name, key: m[key], "params": count_params(model),
                     "macs": count_macs(model, (1, *image.shape)), "input": list(image.shape),
                     "per_class": m.get("per_class_iou", m.get("per_class_ap", m.get("per_class_acc")))})
    return rows


def print_comparison(rows: list[dict[str, Any]], task: str) -> None:
    key = metric_key(task)
    base = rows[0]
    table = [(r["model"], r[key], r[key] - base[key], r["params"] / 1e6, r["macs"] / 1e9,
              base["macs"] / max(r["macs"], 1)) for r in rows]
    print_table("teacher vs student (validation)", ["model", key, "delta", "params (M)", "GMACs", "MACs ratio"], table)
    names = list(rows[0]["per_class"])
    print_table("per class", ["class", *[r["model"] for r in rows]],
                [(n, *[r["per_class"].get(n) for r in rows]) for n in names])
