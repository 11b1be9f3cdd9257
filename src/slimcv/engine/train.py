"""The ``train`` stage: build model and data from a config, then ``fit`` through the shared engine."""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from slimcv._console import console, print_table, progress_bar
from slimcv._io import atomic_write_json, atomic_write_safetensors, read_jsonl
from slimcv.artifact import metric_key, read_run_config, write_model_spec, write_run_config, write_summary
from slimcv.config import TrainConfig, build_config, usable_cores
from slimcv.data import DataBundle, make_loader
from slimcv.engine import distributed as D
from slimcv.engine.checkpoint import last_checkpoint, load_state, rng_state, save_checkpoint, set_rng_state, unwrap
from slimcv.engine.loop import Objective, SupervisedLoss, evaluate, train_one_epoch
from slimcv.engine.optim import build_optimizer, build_scheduler
from slimcv.engine.speed import SpeedChoice
from slimcv.errors import SlimcvError
from slimcv.models import create_model, model_task
from slimcv.run_folder import (BEST_WEIGHTS, CONFIG_JSON, MANIFEST_JSON, METRICS_JSONL, MODEL_JSON, MODEL_WEIGHTS,
                               SPEED_JSON, TEACHER_CACHE, holds_record)


@dataclass
class TrainResult:
    """What a training run produced: its folder, final and best metrics, and the trained model."""

    run_dir: Path
    metrics: dict[str, Any]
    best: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False)
    speed: SpeedChoice | None = None


def train(source: Any, data: Any = None, *, weights: str | None = None, **options: Any) -> TrainResult:
    """Train with cross-entropy; resumable, DDP-aware.

    ``source`` is a TrainConfig (or its dict), or the model: an ``nn.Module`` (trained in place), a model name or
    ``package.module:factory``; ``options`` are TrainConfig fields, e.g.
    ``train(net, data=(train_ds, val_ds), epochs=20, out_dir="runs/mine")``."""
    from slimcv.artifact import check_rebuildable, module_spec, stage_config
    from slimcv.data import as_bundle

    cfg, model_source = stage_config(TrainConfig, source, options, "train", model_field="model")
    if not isinstance(model_source, nn.Module):  # the config names the model (by name or factory)
        data = as_bundle(data if data is not None else cfg.data)
        check_task(cfg.model, data)
        kwargs = sized_kwargs(cfg.model, data, cfg.model_kwargs)
        seed_everything(cfg.seed, cfg.deterministic)  # the initial weights depend on the seed alone
        model = create_model(cfg.model, data.num_classes, weights=weights or cfg.weights, **kwargs)
        spec = {"name": cfg.model, "num_classes": data.num_classes, "kwargs": kwargs, "task": data.task}
    else:
        from slimcv.models.detection import is_detector
        from slimcv.models.tv import plain_logits

        if not is_detector(source):
            source = plain_logits(source)  # trained in place: the wrapper holds the caller's module
        data = as_bundle(data if data is not None else cfg.data, model=source)
        model = source
        if weights is not None:
            from slimcv.models import load_weights

            load_weights(model, weights)
        spec = module_spec(model, data.num_classes, data.task, cfg.model_kwargs)
        check_rebuildable(model, spec)
        cfg = cfg.model_copy(update={"model": spec["name"], "model_kwargs": spec.get("kwargs", {})})
    if data.config is not cfg.data and not data.config.spec.startswith("python:"):
        cfg = cfg.model_copy(update={"data": data.config})  # the data given is the data recorded (and batched)
    objective = task_objective(cfg, data)
    return fit(model, data, cfg, objective, model_spec=spec)


def sized_kwargs(name: str, data: DataBundle, kwargs: dict) -> dict:
    """``kwargs`` for building model ``name``, with a detector's input size set to the data's images (so it
    takes them without resizing) when none is given."""
    kwargs = dict(kwargs)
    if data.task == "detection" and model_task(name) == "detection" and "size" not in kwargs:
        from slimcv.artifact import data_input_shape

        kwargs["size"] = data_input_shape(data)[-2:]
    return kwargs


def task_objective(cfg: TrainConfig, data: DataBundle) -> nn.Module:
    """The supervised loss of the data's task: a detector's own losses, else (weighted) cross-entropy."""
    if data.task == "detection":
        from slimcv.engine.detection import DetectionLoss

        return DetectionLoss()
    return SupervisedLoss(data.info.ignore_index, class_weights(cfg, data), cfg.label_smoothing)


def finetune_config(spec: dict[str, Any], data_config: Any, out_dir: str | Path, **settings: Any) -> TrainConfig:
    """The TrainConfig that fine-tunes the model ``spec`` describes (prune's fine-tuning, QAT, finetune): the one
    place such a config is built. ``settings`` are TrainConfig fields (epochs, optim, schedule, ...)."""
    values = {"data": data_config, "out_dir": str(out_dir), "resume": True, **settings}
    # the model at hand is what trains; its name and options only label config.json
    return build_config(TrainConfig, values, "fine-tuning settings").model_copy(
        update={"model": spec["name"], "model_kwargs": dict(spec.get("kwargs", {}))})


def check_task(model_name: str, data: DataBundle) -> None:
    task = model_task(model_name) if isinstance(model_name, str) else None
    if task is not None and task != data.task:
        raise SlimcvError(
            f"Model {model_name!r} is a {task} model but dataset {data.config.spec!r} is for {data.task}; "
            f"pick a model from `slimcv models --task {data.task}`."
        )


def class_weights(cfg: TrainConfig, data: DataBundle) -> list[float] | None:
    if cfg.class_weights is None:
        return None
    if cfg.class_weights == "median_frequency":
        known = data.info.extra.get("median_frequency_weights")
        if known:
            return list(known)
        from slimcv.data.check import median_frequency_weights

        return median_frequency_weights(data.train, data.num_classes, data.info.ignore_index)
    if len(cfg.class_weights) != data.num_classes:
        raise SlimcvError(f"class_weights has {len(cfg.class_weights)} values but the data has {data.num_classes} classes.")
    return list(cfg.class_weights)


def fit(
    model: nn.Module,
    data: DataBundle,
    cfg: TrainConfig,
    objective: Objective | nn.Module,
    model_spec: dict[str, Any] | None = None,
    on_epoch_end: Callable[[nn.Module, int], None] | None = None,
) -> TrainResult:
    """Train ``model`` with ``objective`` for ``cfg.epochs``: the loop every stage shares. ``on_epoch_end(model,
    epoch)`` runs after each epoch's training, before evaluation (soft pruning zeroes filters there)."""
    distributed = D.init_distributed()
    workers = cfg.data.loader_workers()
    device = D.pick_device(cfg.device, cfg.threads, reserve=workers)
    seed_everything(cfg.seed, cfg.deterministic)
    run_dir = Path(cfg.out_dir)
    start_epoch, history, best, ckpt, previous = _prepare_run_dir(run_dir, cfg)
    model.to(device)
    if isinstance(objective, nn.Module):
        objective.to(device)
    train_loader, val_loader = _loaders(data, cfg, workers, distributed, device)
    speed = _choose_speed(model, objective, data, train_loader, cfg, device, previous)
    cfg = cfg.model_copy(update={"amp": speed.setting.amp, "channels_last": speed.setting.channels_last})
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    net = nn.parallel.DistributedDataParallel(model) if distributed else model
    params = list(model.parameters()) + (list(objective.parameters()) if isinstance(objective, nn.Module) else [])
    optimizer = build_optimizer(params, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.epochs, len(train_loader))
    scaler = torch.amp.GradScaler(device.type) if cfg.amp == "fp16" and device.type == "cuda" else None
    if ckpt is not None:
        _restore(ckpt, model, optimizer, scheduler, scaler, objective)
    if D.is_main():
        if model_spec is not None:
            from slimcv.artifact import data_input_shape

            model_spec = {**model_spec, "input_shape": model_spec.get("input_shape") or data_input_shape(data)}
        _write_run_files(run_dir, cfg, model_spec)
        _write_speed(run_dir, speed, device)
    writer = _tensorboard(run_dir, cfg)
    # on a CPU validation runs in FP32: the scores are those of the weights as they deploy
    ev = dict(task=data.task, num_classes=data.num_classes, ignore_index=data.info.ignore_index,
              class_names=data.info.class_names, amp=cfg.amp if device.type == "cuda" else "none",
              channels_last=cfg.channels_last)
    metric_name = cfg.metric or metric_key(data.task)
    metrics: dict[str, Any] = history[-1].get("val", {}) if history else {}
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # augmentation and worker seeds depend on (seed, epoch) only
        train_loader.sampler.set_epoch(epoch)
        with progress_bar(f"epoch {epoch + 1}/{cfg.epochs}", len(train_loader) * cfg.data.batch_size,
                          cfg.progress and D.is_main()) as bar:
            stats = train_one_epoch(net, objective, train_loader, optimizer, scheduler, device, amp=cfg.amp,
                                    scaler=scaler, clip_grad_norm=cfg.clip_grad_norm,
                                    channels_last=cfg.channels_last, progress=bar)
        if on_epoch_end is not None:
            on_epoch_end(unwrap(model), epoch + 1)
        record: dict[str, Any] = {"epoch": epoch + 1, "train": stats, "lr": optimizer.param_groups[0]["lr"]}
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            metrics, best = _validate(model, data, val_loader, device, ev, cfg, metric_name, best, epoch + 1)
            record["val"] = metrics
        record["epoch_time_s"] = time.perf_counter() - t0
        history.append(record)
        if D.is_main():
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict() if scaler else {}, "rng": rng_state(), "best": best,
                     "objective": _objective_state(objective)}
            _save_epoch(run_dir, record, model, state, cfg, writer, metric_name)
        D.barrier()
    model.to(memory_format=torch.contiguous_format)
    result = TrainResult(run_dir=run_dir, metrics=metrics, best=best, history=history, model=model, speed=speed)
    if D.is_main():
        write_summary(run_dir, {"metrics": metrics, "best": best, "epochs": cfg.epochs})
        print_summary(result, data)
    if writer is not None:
        writer.close()
    return result


def _loaders(data: DataBundle, cfg: TrainConfig, workers: int, distributed: bool, device: torch.device):
    """The training and validation loaders, after decoded images are kept in memory where they fit; training
    batches are made on the device where that pays (data/device_batches.py)."""
    from slimcv.data.device_batches import device_batches

    _keep_decoded(data, cfg, workers)
    train_loader = device_batches(data.train, cfg.data.batch_size, device, mode=cfg.data.batched_augment,
                                  seed=cfg.seed, distributed=distributed, quiet=not D.is_main())
    if train_loader is None:
        train_loader = make_loader(data.train, cfg.data.batch_size, train=True, workers=workers,
                                   seed=cfg.seed, ignore_index=data.info.ignore_index, distributed=distributed)
    val_loader = make_eval_loader(data.val, cfg.data.eval_batch_size or cfg.data.batch_size, workers,
                                  data.info.ignore_index, distributed)
    if len(train_loader) == 0:
        raise SlimcvError(f"The training set ({len(data.train)} samples) is smaller than one batch "
                          f"({cfg.data.batch_size}); lower batch_size.")
    return train_loader, val_loader


def _save_epoch(run_dir: Path, record: dict, model, state: dict, cfg: TrainConfig, writer, metric_name: str) -> None:
    # log first: a crash before the checkpoint only leaves a record that resume drops again
    _append_jsonl(run_dir / METRICS_JSONL, record)
    save_checkpoint(run_dir, record["epoch"], model, state, keep=cfg.keep_checkpoints)
    _log_tensorboard(writer, record)
    _print_epoch(record, metric_name)


def _keep_decoded(data: DataBundle, cfg: TrainConfig, workers: int) -> None:
    """Decode the images of datasets that fit in memory once, before the loaders' workers start (they share them)."""
    if cfg.data.cache == "none":
        return
    from slimcv.data.memory import keep_in_memory

    limit = None if cfg.data.cache == "auto" else 2**62
    progress = cfg.progress and D.is_main()
    cores = usable_cores()
    for name, ds in (("training images", data.train), ("validation images", data.val)):
        # nothing else runs while the images are decoded: every core decodes
        keep_in_memory(ds, workers=max(workers, cores // D.world_size()), max_bytes=limit, progress=progress,
                       name=name)


def _choose_speed(model, objective, data: DataBundle, loader, cfg: TrainConfig, device, previous) -> SpeedChoice:
    """Precision and layout of the training steps: fixed, resumed, or measured on rank 0 and shared."""
    from slimcv.data import spread
    from slimcv.engine import speed as speed_probe

    def sample_batch():
        if hasattr(loader, "sample"):  # batches made on the device: the probe times those
            return loader.sample()
        return loader.collate_fn([data.train[i] for i in spread(cfg.data.batch_size, len(data.train))])

    enabled = cfg.speed_probe and not cfg.deterministic and os.environ.get("SLIMCV_SPEED_PROBE", "1") != "0"
    choice = None
    if D.is_main():
        choice = speed_probe.choose(model, objective, sample_batch, device, lambda p: build_optimizer(p, cfg.optim),
                          amp=cfg.amp, channels_last=cfg.channels_last, enabled=enabled, previous=previous,
                          off_reason="deterministic run: speed probe off" if cfg.deterministic else "speed probe off")
    choice = D.broadcast_object(choice)
    if D.is_main() and cfg.progress:
        console.print(choice.describe())
    return choice


def _write_speed(run_dir: Path, speed: SpeedChoice, device) -> None:
    from slimcv.hardware import cpu_features

    record = {**speed.to_json(), "device": str(device), "threads": torch.get_num_threads()}
    if device.type == "cpu":
        record["cpu"] = cpu_features()
    atomic_write_json(run_dir / SPEED_JSON, record)


def _validate(model, data, val_loader, device, ev, cfg, metric_name, best, epoch):
    """Evaluate after an epoch; keep the best weights. Returns the metrics and the (updated) best record."""
    with progress_bar("evaluate", len(data.val), cfg.progress and D.is_main()) as bar:
        metrics = evaluate(model, val_loader, device, progress=bar, **ev)
    if metric_name not in metrics:
        raise SlimcvError(f"Metric {metric_name!r} is not computed for {data.task}; use one of "
                          f"{[k for k, v in metrics.items() if isinstance(v, float)]}.")
    if not best or metrics[metric_name] > best["value"]:
        best = {"epoch": epoch, "metric": metric_name, "value": metrics[metric_name]}
        if D.is_main():
            run_dir = Path(cfg.out_dir)
            atomic_write_safetensors(unwrap(model).state_dict(), run_dir / BEST_WEIGHTS)
            atomic_write_json(run_dir / "best.json", best)
    return metrics, best


def make_eval_loader(dataset: Dataset, batch_size: int, workers: int, ignore_index: int, distributed: bool = False):
    """An in-order loader; under DDP each process takes its own shard."""
    from functools import partial

    from slimcv.data import collate_pad

    sampler = ShardSampler(dataset) if distributed else None
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                       collate_fn=partial(collate_pad, ignore_index=ignore_index))


class ShardSampler(torch.utils.data.Sampler):
    """Every process evaluates indices rank, rank+world, ...: no sample padded in, none counted twice."""

    def __init__(self, dataset: Dataset) -> None:
        self.indices = list(range(len(dataset)))[torch.distributed.get_rank()::D.world_size()]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def seed_everything(seed: int, deterministic: bool) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def _prepare_run_dir(run_dir: Path, cfg: TrainConfig):
    ckpt = last_checkpoint(run_dir)
    if ckpt is None and not cfg.resume and _has_files(run_dir) and not (
            holds_record(run_dir, CONFIG_JSON) or holds_record(run_dir, MODEL_JSON)):
        raise SlimcvError(f"{run_dir} already holds files that slimcv did not write (no config.json of a slimcv "
                          "run); move them away or choose another --out-dir.")
    if ckpt is None:
        if cfg.resume and _has_files(run_dir) and read_run_config(run_dir) is None:
            raise SlimcvError(f"--resume: {run_dir} holds files but no slimcv run to continue (no config.json, no "
                              "last.json); point --out-dir at the run to continue, or at a new folder.")
        if cfg.resume and D.is_main() and _has_files(run_dir):
            console.print(f"[yellow]{run_dir} died before its first checkpoint; starting it from scratch.[/]")
        return 0, [], {}, None, None
    if not cfg.resume:
        raise SlimcvError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out-dir.")
    old = read_run_config(run_dir)
    _check_same_config(run_dir, old, cfg)
    state = _check_state(load_state(ckpt), ckpt)
    epoch = int(state["epoch"])
    history = [r for r in read_jsonl(run_dir / METRICS_JSONL) if r.get("epoch", 0) <= epoch]
    return epoch, history, state.get("best") or {}, ckpt, old


def _has_files(run_dir: Path) -> bool:
    # what slimcv puts there before training starts: a recipe's manifest, the lock, distill's teacher cache
    return run_dir.is_dir() and any(p.name not in (MANIFEST_JSON, "tb", ".lock", TEACHER_CACHE)
                                    for p in run_dir.iterdir())


def _check_same_config(run_dir: Path, recorded: dict | None, cfg: TrainConfig) -> None:
    if recorded is None:
        return
    old, new = dict(recorded), json.loads(cfg.model_dump_json())
    ignore = {"resume", "progress", "out_dir", "epochs", "threads", "device", "speed_probe"}
    ignore |= {k for k in ("amp", "channels_last") if new.get(k) == "auto"}  # auto takes the run's recorded choice
    for d in (old, new):  # how the data is loaded does not change the run
        if isinstance(d.get("data"), dict):
            d["data"] = {k: v for k, v in d["data"].items() if k not in ("workers", "cache")}
    diff = sorted(k for k in set(old) | set(new) if k not in ignore and old.get(k) != new.get(k))
    if diff:
        raise SlimcvError(f"Cannot resume {run_dir}: its config differs in {diff}; use the same settings "
                          "or another --out-dir.")


CHECKPOINT_KEYS = ("epoch", "optimizer", "scheduler", "rng")


def _check_state(state: Any, ckpt: Path) -> dict:
    """A checkpoint's state with the keys resuming needs, or one sentence naming what is missing."""
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise SlimcvError(f"Checkpoint {ckpt} lacks {', '.join(missing)}, so the run cannot continue from it; delete "
                          "that checkpoint folder to resume from the one before, or start without --resume.")
    return state


def _restore(ckpt: Path, model, optimizer, scheduler, scaler, objective) -> None:
    from slimcv.models import load_weights

    load_weights(model, ckpt / MODEL_WEIGHTS)
    state = _check_state(load_state(ckpt), ckpt)
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if isinstance(objective, nn.Module) and state.get("objective"):
            objective.load_state_dict(state["objective"])
        set_rng_state(state["rng"])
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise SlimcvError(f"Checkpoint {ckpt} does not fit this run ({str(e).splitlines()[0][:150]}); delete that "
                          "checkpoint folder to resume from the one before, or start without --resume.") from e
    if D.is_main():
        console.print(f"Resumed from {ckpt} (epoch {state['epoch']}).")


def _objective_state(objective) -> dict:
    return objective.state_dict() if isinstance(objective, nn.Module) else {}


def _write_run_files(run_dir: Path, cfg: TrainConfig, spec: dict | None) -> None:
    write_run_config(run_dir, json.loads(cfg.model_dump_json()))
    if spec is not None:
        write_model_spec(run_dir, spec)


def _append_jsonl(path: Path, record: dict) -> None:
    lines = [json.dumps(r) for r in read_jsonl(path) if r.get("epoch") != record["epoch"]]
    from slimcv._io import atomic_write_text

    atomic_write_text(path, "\n".join(lines + [json.dumps(record, default=float)]) + "\n")


def _tensorboard(run_dir: Path, cfg: TrainConfig):
    if not cfg.tensorboard or not D.is_main():
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tb"))


def _log_tensorboard(writer, record: dict) -> None:
    if writer is None:
        return
    for k, v in record["train"].items():
        writer.add_scalar(f"train/{k}", v, record["epoch"])
    for k, v in record.get("val", {}).items():
        if isinstance(v, float) and math.isfinite(v):
            writer.add_scalar(f"val/{k}", v, record["epoch"])


def _print_epoch(record: dict, metric: str) -> None:
    val = record.get("val", {})
    shown = f" {metric} {val[metric]:.2f}" if metric in val else ""
    console.print(f"epoch {record['epoch']}: loss {record['train']['loss']:.4f}{shown} "
                  f"({record['train']['images_per_s']:.1f} img/s, {record['epoch_time_s']:.1f} s)")


def print_summary(result: TrainResult, data: DataBundle) -> None:
    if result.metrics:
        print_metrics(f"{result.run_dir}: validation", result.metrics, data.info.class_names)


def print_metrics(title: str, m: dict, class_names) -> None:
    """Per-class table of a segmentation, detection or classification evaluation."""
    if "map" in m:
        rows = [(c, m["per_class_ap"].get(c), m["per_class_ap50"].get(c)) for c in class_names]
        rows.append(("mean", m["map"], m["map50"]))
        print_table(f"{title} ({m.get('images', '?')} images, {m.get('objects', '?')} objects)",
                    ["class", "AP %", "AP50 %"], rows)
    elif "miou" in m:
        rows = [(c, m["per_class_iou"].get(c), m["per_class_acc"].get(c)) for c in class_names]
        rows.append(("mean", m["miou"], m["mean_acc"]))
        print_table(f"{title} (pixel acc {m['pixel_acc']:.2f}%)", ["class", "IoU %", "acc %"], rows)
    else:
        rows = [(c, m["per_class_acc"].get(c)) for c in class_names]
        rows += [("top-1", m["top1"]), ("top-5", m["top5"])]
        print_table(title, ["class", "acc %"], rows)
