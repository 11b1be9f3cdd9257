"""The ``prune`` stage: prune a trained run toward a target (hard, soft or sensitivity-guided), fine-tune
(optionally distilling from the unpruned model), and compare before/after in one table."""
from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimcv._console import console, print_table
from slimcv._io import atomic_write_json
from slimcv.bench.latency import eager_runner, time_interleaved
from slimcv.bench.macs import count_macs, count_params
from slimcv.config import PruneConfig
from slimcv.data import DataBundle, make_loader
from slimcv.engine import distributed as D
from slimcv.artifact import (check_rebuildable, load_inputs, metric_key, read_run_config, stage_config, tag,
                             write_run_config, write_summary)
from slimcv.errors import SlimcvError
from slimcv.engine.loop import SupervisedLoss, evaluate, match_size
from slimcv.engine.train import class_weights, finetune_config, fit, make_eval_loader
from slimcv.prune import sensitivity
from slimcv.prune.schedule import _Meter, prune_to_target, ratio_for
from slimcv.prune.soft import remove_soft_pruned, soft_prune_step, zeroed_filters
from slimcv.prune.structured import (IMPORTANCES, NEEDS_DATA, PruneResult, check_layer_ratios, prune_structured, pruned_spec,
                                     save_pruned)
from slimcv.run_folder import PRUNE_JSON, SENSITIVITY_JSON


@dataclass
class PruneStageResult:
    """The pruned module (reloadable from ``out_dir`` when one was given), before/after figures and steps."""

    model: nn.Module
    out_dir: Path | None
    steps: list[dict[str, Any]]
    before: dict[str, Any]
    after: dict[str, Any]
    spec: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.after.get("metrics", {})


def prune(source: Any, data: Any = None, *, weights: str | None = None, **options: Any) -> PruneStageResult:
    """Prune a model toward a params/MACs/latency target, fine-tune, compare before/after.

    ``source`` is a PruneConfig (or its dict), or the model itself: an ``nn.Module``, a model folder, a model
    name or ``package.module:factory`` with ``weights``; ``options`` are PruneConfig fields, e.g.
    ``prune(net, data=(train_ds, val_ds), remove=0.5, finetune_epochs=10)``. Without ``out_dir`` nothing is
    kept on disk."""
    model_kwargs = options.pop("model_kwargs", None)  # how to rebuild a user's module, when it takes arguments
    cfg, model_source = stage_config(PruneConfig, source, options, "prune", model_field="source",
                                     defaults={"out_dir": None})
    IMPORTANCES.get(cfg.importance)  # an unknown name: one sentence with the close matches, before any work
    if cfg.out_dir is None:
        with tempfile.TemporaryDirectory(prefix="slimcv-prune-") as tmp:
            result = _prune(cfg.model_copy(update={"out_dir": tmp}), model_source, data, weights, keep=False,
                            model_kwargs=model_kwargs)
        result.out_dir = None
        return result
    return _prune(cfg, model_source, data, weights, keep=True, model_kwargs=model_kwargs)


def _prune(cfg: PruneConfig, model_source: Any, data: Any, weights: str | None, keep: bool,
           model_kwargs: dict | None = None) -> PruneStageResult:
    if model_source is None:
        model_source = cfg.source
        if data is None and ("data" in cfg.model_fields_set or not Path(cfg.source).is_dir()):
            data = cfg.data
    loaded, data = load_inputs(model_source, data, weights=weights, kwargs=model_kwargs)
    if data.task == "detection" and cfg.importance == "taylor":
        raise SlimcvError("Taylor importance needs a classification or segmentation loss per output; prune a "
                          "detector with l1, l2, bn_scale, activation or apoz importance.")
    model, spec = loaded.model, loaded.spec
    if keep:
        check_rebuildable(model, spec)
    if isinstance(model_source, nn.Module):
        model = copy.deepcopy(model)  # the caller's module stays as it was
    device = D.pick_device(cfg.device, cfg.threads)
    original = copy.deepcopy(model).eval()
    example = data.val[0][0][None]
    before = _measure(model, data, cfg, device, example)
    out = Path(cfg.out_dir)
    key = metric_key(data.task)
    # fine-tuning is a fit of the model at hand; the model name only labels its config.json
    reference = _reference_epochs(loaded.folder) if cfg.finetune_epochs == "auto" else None
    # each step sets its own epochs; with 'auto' the pruned folder's config.json keeps the source's training
    # length, so pruning it again with 'auto' scales from the same reference
    tcfg = finetune_config(spec, data.config, out, epochs=reference or max(cfg.finetune_epochs, 1),
                           optim=cfg.optim, schedule=cfg.schedule,
                           class_weights=_source_class_weights(cfg, loaded.folder), device=cfg.device,
                           threads=cfg.threads, seed=cfg.seed, progress=cfg.progress, tensorboard=keep)
    objective = _objective(cfg, original, data, device, class_weights(tcfg, data))
    model.to("cpu")
    common = dict(num_classes=spec["num_classes"], global_pruning=cfg.global_pruning,
                  max_layer_ratio=cfg.max_layer_ratio, ignored=cfg.ignore, min_channels=cfg.min_channels,
                  round_to=cfg.round_to)
    calib = _calibration(cfg, data) if cfg.importance in NEEDS_DATA else None
    if calib is not None:
        common.update(calibration=calib, loss_fn=lambda logits, t: F.cross_entropy(
            match_size(logits, t), t, ignore_index=data.info.ignore_index))

    epochs_used: list[int] = []
    fine_tune = _fine_tuner(cfg, tcfg, data, objective, spec, example, device, out, reference, before["macs"],
                            epochs_used)
    extra: dict[str, Any] = {}
    if cfg.sensitivity:
        sens = _sensitivity(model, example, data, cfg, spec["num_classes"], key, device, out)
        extra["sensitivity"] = str(out / SENSITIVITY_JSON)
    if cfg.method == "soft":
        steps, history = _soft(model, example, data, cfg, spec, tcfg, objective, common, out, reference)
    elif cfg.layer_ratios or cfg.max_drop is not None:
        if cfg.layer_ratios:
            ratios = check_layer_ratios(model, cfg.layer_ratios)
        else:
            ratios = {k: v for k, v in sens.layer_ratios(cfg.max_drop).items() if v > 0}
        result = prune_structured(model, example, ratio=0.0, ratio_dict=ratios, importance=cfg.importance, **common)
        history = result.history
        steps = [{"step": 1, "layer_ratios": ratios, "params": result.params_after, "macs": result.macs_after,
                  "metrics": fine_tune(model, 1, history)}]
    else:
        steps = prune_to_target(model, example, remove=cfg.remove, target=cfg.target, steps=cfg.steps,
                                importance=cfg.importance, fine_tune=fine_tune, **common)
        history = steps[-1].pop("history")
    model.to("cpu")
    result = PruneResult(history, before["params"], count_params(model), before["macs"],
                         count_macs(model, tuple(example.shape)))
    save_pruned(model, spec, result, tuple(example.shape), out)
    final_spec = {**pruned_spec(spec, result.history, tuple(example.shape))}
    tag(model, final_spec)
    after = _measure(model, data, cfg, device, example)
    if cfg.latency_runs:
        _time_before_after(original, model, example, cfg, before, after)
    before.pop("metrics")
    if epochs_used:
        extra["finetune_epochs"] = epochs_used
    _write_records(out, cfg, tcfg, data, before, after, steps, extra)
    _print(before, after, key)
    if keep:
        console.print(f"saved the pruned model in {out}; next: slimcv quantize {out} -o {out}_int8 (INT8, scored as "
                      f"deployed), or slimcv export {out} -o {out}/model.onnx", highlight=False, soft_wrap=True)
    return PruneStageResult(model, out, steps, before, after, final_spec)


def _time_before_after(original: nn.Module, model: nn.Module, example, cfg: PruneConfig, before: dict,
                       after: dict) -> None:
    """Batch-1 eager latency of the unpruned and the pruned model, interleaved, into ``before``/``after``."""
    t = time_interleaved({"before": eager_runner(original.to("cpu"), example),
                          "after": eager_runner(model.to("cpu").eval(), example)}, runs=cfg.latency_runs,
                         threads=cfg.threads)
    before["latency_ms"], after["latency_ms"] = t["before"].median_ms, t["after"].median_ms
    after["latency_threads"] = before["latency_threads"] = t["after"].threads


def _write_records(out: Path, cfg: PruneConfig, tcfg, data: DataBundle, before: dict, after: dict, steps: list,
                   extra: dict) -> None:
    """The same files a train run has (so eval, report and later stages read a pruned folder like any run),
    and prune.json with the before/after figures, the steps and the config."""
    write_run_config(out, tcfg.model_dump(mode="json"))
    write_summary(out, {"metrics": after["metrics"], "stage": "prune"})
    atomic_write_json(out / PRUNE_JSON, {
        "before": before, "after": {k: v for k, v in after.items() if k != "metrics"}, "steps": steps, **extra,
        "config": cfg.model_copy(update={"data": data.config}).model_dump(mode="json")})


AUTO_REFERENCE_EPOCHS = 10  # finetune_epochs "auto" for a model without a slimcv training record


def _reference_epochs(folder: Path | None) -> int:
    """The epochs the source was trained for (its run's config.json), or AUTO_REFERENCE_EPOCHS when unknown."""
    run = read_run_config(folder) if folder is not None else None
    epochs = (run or {}).get("epochs")
    return int(epochs) if isinstance(epochs, int) and epochs > 0 else AUTO_REFERENCE_EPOCHS


def auto_epochs(reference: int, removed: float) -> int:
    """Fine-tuning epochs for a step that removed ``removed`` of the source's MACs: the literature's recovery
    schedules run about as long, relative to the original training, as the fraction they pruned (at least 1)."""
    return max(1, math.ceil(reference * max(removed, 0.0) - 1e-9))


def _fine_tuner(cfg: PruneConfig, tcfg, data: DataBundle, objective, spec: dict[str, Any], example, device,
                out: Path, reference: int | None, source_macs: int, epochs_used: list[int]):
    """``fine_tune(model, step, history)`` for each pruning step: BatchNorm re-estimated, then ``finetune_epochs``
    (with 'auto', ``reference`` scaled by the MACs the step removed) through the engine into ``step_N/``; the
    first step's measured precision and layout serve every step. ``epochs_used`` gets each step's epochs."""
    measured: dict[str, Any] = {}
    last_macs = source_macs

    def fine_tune(m: nn.Module, step: int, history: list) -> dict[str, Any]:
        nonlocal last_macs
        _reestimate(m, data, cfg, device)
        if reference is not None:
            macs = count_macs(m, tuple(example.shape))
            epochs = auto_epochs(reference, (last_macs - macs) / max(source_macs, 1))
            last_macs = macs
        else:
            epochs = cfg.finetune_epochs
        if epochs == 0:
            return {}
        epochs_used.append(epochs)
        step_cfg = tcfg.model_copy(update={"out_dir": str(out / f"step_{step}"), "epochs": epochs, **measured})
        result = _fit(m, data, step_cfg, objective, pruned_spec(spec, history, example.shape))
        if result.speed is not None:
            measured.update(amp=result.speed.setting.amp, channels_last=result.speed.setting.channels_last)
        return result.metrics

    return fine_tune


def _source_class_weights(cfg: PruneConfig, folder: Path | None):
    """The fine-tuning loss's class weights: 'source' reuses the pruned run's own (a model trained with
    median-frequency weights and fine-tuned without them drifts toward the frequent classes)."""
    if cfg.class_weights != "source":
        return cfg.class_weights
    run = read_run_config(folder) if folder is not None else None
    return (run or {}).get("class_weights")


def _fit(model: nn.Module, data: DataBundle, cfg, objective, spec: dict[str, Any], **kwargs):
    """fit with ``objective``, or with the objective it builds for this model's current widths (a detector's
    distillation adapts the pruned neck to the unpruned one's)."""
    if isinstance(objective, nn.Module) or not callable(objective):
        return fit(model, data, cfg, objective, model_spec=spec, **kwargs)
    bound = objective(model)
    try:
        return fit(model, data, cfg, bound, model_spec=spec, **kwargs)
    finally:
        bound.remove()


def _objective(cfg: PruneConfig, original: nn.Module, data: DataBundle, device, weights: list[float] | None):
    """CE (with the class weights), or CE + KD from the unpruned model (it runs beside the student, frozen); for a
    detector its own losses, or a function that builds its distillation objective for the pruned widths."""
    if data.task == "detection":
        from slimcv.engine.detection import DetectionLoss

        if not cfg.distill:
            return DetectionLoss()
        unknown = [s.name for s in cfg.distill if s.name != "kd"]
        if unknown:
            raise SlimcvError(f"Loss {unknown[0]!r} works on classification or segmentation outputs; fine-tune a "
                              "pruned detector with distill: [kd] (its head and neck against the unpruned one's).")
        from slimcv.distill.detection import DetectionDistillObjective

        w = sum(s.weight for s in cfg.distill)
        sample = data.train[0][0][None].to(device)
        teacher = original.to(device)
        # the pruned head lines up with the unpruned one, so kd alone, as distill does by default
        return lambda m: DetectionDistillObjective(teacher, m.to(device), sample, alpha=cfg.alpha, kd_weight=w,
                                                   feature_weight=None)
    if not cfg.distill:
        return SupervisedLoss(data.info.ignore_index, weights)
    from slimcv.distill.distill import DistillObjective

    return DistillObjective(original.to(device), cfg.distill, cfg.alpha, data.info.ignore_index, weights, None)


def _reestimate(model: nn.Module, data: DataBundle, cfg: PruneConfig, device) -> None:
    """BatchNorm statistics measured again on training images after a pruning step (before any fine-tuning)."""
    if cfg.bn_batches == 0:
        return
    from slimcv.prune.bn import reestimate_batchnorm

    loader = make_loader(data.train, cfg.data.batch_size, train=True, workers=0, seed=cfg.seed + 1,
                         ignore_index=data.info.ignore_index)
    if len(loader) == 0:  # fewer images than one batch: the shuffled loader drops them all, so read them in order
        loader = make_loader(data.train, cfg.data.batch_size, train=False, workers=0,
                             ignore_index=data.info.ignore_index)
    was = next(model.parameters()).device
    seen = reestimate_batchnorm(model.to(device), itertools.islice(loader, cfg.bn_batches), device)
    model.to(was)
    if seen == 0 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        warnings.warn(f"BatchNorm statistics were kept as they were: the training set ({len(data.train)} "
                      "samples) gave no batch of two images to re-estimate them from.", stacklevel=2)


def _calibration(cfg: PruneConfig, data: DataBundle) -> list:
    loader = make_loader(data.train, cfg.data.batch_size, train=True, workers=0, seed=cfg.seed,
                         ignore_index=data.info.ignore_index)
    return [(images, targets[0] if isinstance(targets, (tuple, list)) else targets)
            for images, targets in itertools.islice(loader, cfg.calibration_batches)]


def _soft(model, example, data, cfg, spec, tcfg, objective, common, out, reference: int | None):
    """Soft filter pruning for the first ``soft_epochs`` (zeroed every epoch, free to grow back), then the
    still-zeroed filters are removed and the smaller network is fine-tuned for the remaining epochs."""
    goal_kwargs = {k: v for k, v in common.items()
                   if k in ("num_classes", "ignored", "max_layer_ratio", "min_channels")}
    meter = _Meter(model, example, cfg.target)
    ratio = ratio_for(model, example, meter(model) * (1 - cfg.remove), meter, importance="l2", **goal_kwargs)
    total = auto_epochs(reference, cfg.remove) if reference is not None else cfg.finetune_epochs
    soft_epochs = min(cfg.soft_epochs or max(1, -(-total // 2)), total)
    soft_prune_step(model, example, ratio=ratio, **goal_kwargs)

    def zero(m: nn.Module, _epoch: int) -> None:
        was = next(m.parameters()).device
        soft_prune_step(m.to("cpu"), example, ratio=ratio, **goal_kwargs)
        m.to(was)

    metrics = _fit(model, data, tcfg.model_copy(update={"out_dir": str(out / "soft"), "epochs": soft_epochs}),
                   objective, spec, on_epoch_end=zero).metrics
    model.to("cpu")
    # selected again from the trained weights (a resumed run has only those): the zeroed filters have the
    # smallest norm, so this is the set the last epoch zeroed
    history = soft_prune_step(model, example, ratio=ratio, **goal_kwargs)
    still_zero = zeroed_filters(model, history)
    result = remove_soft_pruned(model, example, history)
    record = {"step": 1, "channel_ratio": ratio, "params": result.params_after, "macs": result.macs_after,
              "soft_epochs": soft_epochs, "zeroed_filters": still_zero, "metrics_before_removal": metrics}
    hard_epochs = total - soft_epochs
    if hard_epochs > 0:
        record["metrics"] = _fit(model, data, tcfg.model_copy(update={"out_dir": str(out / "finetune"),
                                                                      "epochs": hard_epochs}),
                                 objective, pruned_spec(spec, result.history, example.shape)).metrics
    return [record], result.history


def _sensitivity(model, example, data, cfg, num_classes, key, device, out) -> sensitivity.Sensitivity:
    return sensitivity_analysis(model, example, data, ratios=cfg.sensitivity, batches=cfg.sensitivity_batches,
                                importance="l1" if cfg.importance in NEEDS_DATA else cfg.importance,
                                ignored=cfg.ignore, num_classes=num_classes, device=device, out_dir=out,
                                progress=cfg.progress)


def sensitivity_analysis(model: nn.Module, example: torch.Tensor, data: DataBundle, *, ratios: Sequence[float],
                         batches: int = 8, importance: str = "l1", ignored: Sequence[str] = (),
                         num_classes: int | None = None, device=None, out_dir: str | Path | None = None,
                         progress: bool = True) -> sensitivity.Sensitivity:
    """Prune each layer of ``model`` alone at each ratio and score it on ``batches`` validation batches of
    ``data``; writes sensitivity.json and sensitivity.png to ``out_dir`` when given."""
    device = device or torch.device("cpu")
    key = metric_key(data.task)
    loader = make_eval_loader(data.val, data.config.eval_batch_size or data.config.batch_size,
                              data.config.loader_workers(), data.info.ignore_index)
    held = list(itertools.islice(loader, batches))

    def score(m: nn.Module) -> float:
        m.to(device)
        r = evaluate(m, held, device, task=data.task, num_classes=data.num_classes,
                     ignore_index=data.info.ignore_index, class_names=data.info.class_names)[key]
        m.to("cpu")
        return r

    sens = sensitivity.analyze(model, example, score, num_classes=num_classes or data.num_classes, ratios=ratios,
                     importance=importance, ignored=ignored, metric=key, progress=progress)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / SENSITIVITY_JSON, sens.to_dict())
        sensitivity.plot(sens, out / "sensitivity.png")
    return sens


def _measure(model: nn.Module, data: DataBundle, cfg: PruneConfig, device, example) -> dict[str, Any]:
    loader = make_eval_loader(data.val, data.config.eval_batch_size or data.config.batch_size, data.config.loader_workers(),
                              data.info.ignore_index)
    model.to(device)
    m = evaluate(model, loader, device, task=data.task, num_classes=data.num_classes,
                 ignore_index=data.info.ignore_index, class_names=data.info.class_names)
    model.to("cpu")
    key = metric_key(data.task)
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return {key: m[key], "params": count_params(model), "macs": count_macs(model, tuple(example.shape)),
            "bytes": size, "metrics": m}


def _print(before: dict, after: dict, key: str) -> None:
    names = [key, "params", "macs", "bytes", "latency_ms"]
    rows = [(k, before[k], after[k], after[k] / before[k] if before[k] else None) for k in names if k in before]
    threads = before.get("latency_threads")
    title = "structured pruning: before vs after" + (f" (latency: batch 1, {threads} threads)" if threads else "")
    print_table(title, ["", "before", "after", "after/before"], rows)

