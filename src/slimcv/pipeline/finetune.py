"""Fine-tune a run folder's model further (pruned ones included), with KD from a teacher when one is given: the
``finetune`` recipe stage, and how a compress search trains its finalists on."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from slimcv.config import CacheConfig, DataConfig, LossSpec, OptimConfig, ScheduleConfig
from slimcv.errors import SlimcvError


class FinetuneConfig(BaseModel):
    """Fine-tune a stage's model (pruned ones included) with CE, plus KD from ``teacher`` when one is given."""

    model_config = {"extra": "forbid", "frozen": True}

    source: str
    data: DataConfig = Field(default_factory=DataConfig)
    epochs: int = Field(5, ge=1)
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=5e-4))
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    clip_grad_norm: float | None = Field(None, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    alpha: float = Field(1.0, ge=0, description="weight of the cross-entropy on hard labels")
    class_weights: tuple[float, ...] | Literal["median_frequency", "source"] | None = Field(
        "source", description="cross-entropy class weights; 'source': those the model was trained with")
    losses: tuple[LossSpec, ...] = Field((), description="KD losses (need a teacher); default kd when one is given")
    teacher: str | None = None
    teacher_weights: str | None = None
    teacher_kwargs: dict[str, Any] = Field(default_factory=dict)
    mode: Literal["online", "offline"] = Field("online", description="offline: the teacher's maps are computed "
                                               "once and read back each epoch (segmentation)")
    cache: CacheConfig = Field(default_factory=CacheConfig)
    seed: int = 0
    device: str = "auto"
    threads: int | None = Field(None, ge=1, description="intra-op threads (default: torch's)")
    eval_every: int = Field(1, ge=1)
    progress: bool = True
    tensorboard: bool = True
    out_dir: str = "runs/finetune"
    resume: bool = False


def finetune(cfg: FinetuneConfig, data=None):
    """Train a run folder's model further (architecture, pruning included, from its model.json) through the engine."""
    from slimcv.data import as_bundle, load_data
    from slimcv.distill.distill import DistillObjective, load_teacher, with_teacher_cache
    from slimcv.engine import distributed as D
    from slimcv.artifact import load_run_model
    from slimcv.engine.loop import SupervisedLoss
    from slimcv.engine.train import class_weights, finetune_config, fit

    model, spec = load_run_model(cfg.source)
    data = as_bundle(data, model=model) if data is not None else load_data(cfg.data)
    if cfg.teacher is not None and cfg.mode == "offline":
        if data.task != "segmentation":
            raise SlimcvError(f"Offline distillation caches dense teacher maps, for segmentation only; fine-tune "
                              f"this {data.task} model with mode='online'.")
        if data.config.spec.startswith("python:"):
            raise SlimcvError("Offline distillation caches the teacher's maps per file of a dataset spec; with your "
                              "own Dataset use mode='online'.")
    tcfg = finetune_config(spec, cfg.data, cfg.out_dir, resume=cfg.resume, epochs=cfg.epochs, optim=cfg.optim,
                           schedule=cfg.schedule, clip_grad_norm=cfg.clip_grad_norm, class_weights=_class_weights(cfg),
                           label_smoothing=cfg.label_smoothing, seed=cfg.seed, device=cfg.device, threads=cfg.threads,
                           eval_every=cfg.eval_every, progress=cfg.progress, tensorboard=cfg.tensorboard)
    if cfg.teacher is not None:
        teacher, _ = load_teacher(cfg, data.num_classes)
        device = D.pick_device(cfg.device)
        teacher.to(device).eval().requires_grad_(False)
        weights = class_weights(tcfg, data) if data.task != "detection" else None  # before maps join the samples
        if cfg.mode == "offline":
            data, _ = with_teacher_cache(teacher, data, cfg, device)
        if data.task == "detection":
            from slimcv.distill.detection import detection_objective

            objective = detection_objective(cfg, model, teacher, data)
        else:
            objective = DistillObjective(None if cfg.mode == "offline" else teacher, cfg.losses, cfg.alpha,
                                         data.info.ignore_index, weights, None)
    elif data.task == "detection":
        from slimcv.engine.detection import DetectionLoss

        objective = DetectionLoss()
    else:
        objective = SupervisedLoss(data.info.ignore_index, class_weights(tcfg, data), cfg.label_smoothing)
    spec = {**spec, "finetuned_from": cfg.source}
    try:
        return fit(model, data, tcfg, objective, model_spec=spec)
    finally:
        if hasattr(objective, "remove"):
            objective.remove()


def _class_weights(cfg: FinetuneConfig):
    """'source' keeps the loss the model was trained with (pruned or not): fine-tuned without the median-frequency
    weights it was trained with, a segmentation model drifts toward the frequent classes."""
    from slimcv.artifact import read_run_config

    if cfg.class_weights != "source":
        return cfg.class_weights
    return (read_run_config(cfg.source) or {}).get("class_weights")
