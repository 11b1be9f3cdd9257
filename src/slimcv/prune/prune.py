"""The ``prune`` stage: prune a trained run step by step toward a target, fine-tune, compare before/after."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimcv._console import print_table
from slimcv._io import atomic_write_json
from slimcv.bench.macs import count_macs, count_params
from slimcv.config import PruneConfig, TrainConfig, build_config
from slimcv.data import DataBundle, load_data
from slimcv.engine import distributed as D
from slimcv.engine.checkpoint import load_run_model
from slimcv.engine.loop import SupervisedLoss, evaluate
from slimcv.engine.train import fit, make_eval_loader
from slimcv.prune.schedule import prune_to_target
from slimcv.prune.structured import PruneResult, save_pruned


@dataclass
class PruneStageResult:
    model: nn.Module
    out_dir: Path
    steps: list[dict[str, Any]]
    before: dict[str, Any]
    after: dict[str, Any]


def prune(cfg: PruneConfig | dict[str, Any], data: DataBundle | None = None) -> PruneStageResult:
    """Load ``cfg.source``, remove ``cfg.remove`` of its params/MACs in ``cfg.steps`` steps, fine-tune, save."""
    cfg = build_config(PruneConfig, cfg, "prune config")
    data = data or load_data(cfg.data)
    device = D.pick_device(cfg.device)
    model, spec = load_run_model(cfg.source)
    example = data.val[0][0][None]
    before = _measure(model, data, cfg, device, example)
    out = Path(cfg.out_dir)
    spec_now = dict(spec)

    def fine_tune(m: nn.Module, step: int) -> dict[str, Any]:
        if cfg.finetune_epochs == 0:
            return {}
        tcfg = TrainConfig(model=spec["name"], model_kwargs=spec.get("kwargs", {}), data=data.config,
                           epochs=cfg.finetune_epochs, optim=cfg.optim, schedule=cfg.schedule, device=cfg.device,
                           seed=cfg.seed, out_dir=str(out / f"step_{step}"), progress=cfg.progress, resume=True)
        return fit(m, data, tcfg, SupervisedLoss(data.info.ignore_index), model_spec=spec_now).metrics

    model.to("cpu")
    steps = prune_to_target(model, example, num_classes=spec["num_classes"], remove=cfg.remove, target=cfg.target,
                            steps=cfg.steps, importance=cfg.importance, global_pruning=cfg.global_pruning,
                            max_layer_ratio=cfg.max_layer_ratio, fine_tune=fine_tune)
    history = steps[-1].pop("history")
    result = PruneResult(history, before["params"], count_params(model), before["macs"],
                         count_macs(model, tuple(example.shape)))
    save_pruned(model, spec, result, tuple(example.shape), out)
    after = _measure(model, data, cfg, device, example)
    atomic_write_json(out / "prune.json", {"before": before, "after": after, "steps": steps,
                                           "config": cfg.model_dump(mode="json")})
    _print(before, after)
    return PruneStageResult(model, out, steps, before, after)


def _measure(model: nn.Module, data: DataBundle, cfg: PruneConfig, device, example) -> dict[str, Any]:
    loader = make_eval_loader(data.val, data.config.eval_batch_size or data.config.batch_size, data.config.workers,
                              data.info.ignore_index)
    model.to(device)
    m = evaluate(model, loader, device, task=data.task, num_classes=data.num_classes,
                 ignore_index=data.info.ignore_index, class_names=data.info.class_names)
    model.to("cpu")
    key = "miou" if data.task == "segmentation" else "top1"
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return {key: m[key], "params": count_params(model), "macs": count_macs(model, tuple(example.shape)),
            "bytes": size}


def _print(before: dict, after: dict) -> None:
    rows = [(k, before[k], after[k], after[k] / before[k] if before[k] else None) for k in before]
    print_table("structured pruning: before vs after", ["", "before", "after", "after/before"], rows)
