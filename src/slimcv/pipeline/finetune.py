"""Fine-tune a run folder's model further (pruned ones included), with KD from a teacher when one is given: the
``finetune`` recipe stage, and how a compress search trains its finalists on."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from slimcv.config import DataConfig, LossSpec, OptimConfig, ScheduleConfig


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
    losses: tuple[LossSpec, ...] = Field((), description="KD losses (need a teacher); default kd when one is given")
    teacher: str | None = None
    teacher_weights: str | None = None
    teacher_kwargs: dict[str, Any] = Field(default_factory=dict)
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
    from slimcv.data import load_data
    from slimcv.distill.distill import DistillObjective, load_teacher
    from slimcv.engine import distributed as D
    from slimcv.artifact import load_run_model
    from slimcv.engine.loop import SupervisedLoss
    from slimcv.engine.train import finetune_config, fit

    data = data or load_data(cfg.data)
    model, spec = load_run_model(cfg.source)
    tcfg = finetune_config(spec, cfg.data, cfg.out_dir, resume=cfg.resume, epochs=cfg.epochs, optim=cfg.optim,
                           schedule=cfg.schedule, clip_grad_norm=cfg.clip_grad_norm,
                           label_smoothing=cfg.label_smoothing, seed=cfg.seed, device=cfg.device, threads=cfg.threads,
                           eval_every=cfg.eval_every, progress=cfg.progress, tensorboard=cfg.tensorboard)
    if cfg.teacher is not None:
        teacher, _ = load_teacher(cfg, data.num_classes)
        teacher.to(D.pick_device(cfg.device)).eval().requires_grad_(False)
        if data.task == "detection":
            from slimcv.distill.detection import detection_objective

            objective = detection_objective(cfg, model, teacher, data)
        else:
            objective = DistillObjective(teacher, cfg.losses, cfg.alpha, data.info.ignore_index, None, None)
    elif data.task == "detection":
        from slimcv.engine.detection import DetectionLoss

        objective = DetectionLoss()
    else:
        objective = SupervisedLoss(data.info.ignore_index, label_smoothing=cfg.label_smoothing)
    spec = {**spec, "finetuned_from": cfg.source}
    try:
        return fit(model, data, tcfg, objective, model_spec=spec)
    finally:
        if hasattr(objective, "remove"):
            objective.remove()
