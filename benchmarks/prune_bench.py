"""Pruning benchmarks: structured (importance criteria, soft vs hard) and unstructured, on the CPU teachers.

    python benchmarks/train_teachers.py cifar10 camvid      # first: the teachers (runs/bench/...)
    python benchmarks/prune_bench.py cifar [--finetune-epochs 3]
    python benchmarks/prune_bench.py camvid [--finetune-epochs 10]

cifar: the ResNet-20 teacher (the issue's ResNet-56 costs ~6 min/epoch here; give --teacher for a GPU run)
pruned to 2.5x fewer MACs (remove 0.6 of MACs) with l1, taylor and activation importance, plus soft filter
pruning at the same target, each fine-tuned for the same epochs; unstructured 50/70/90% without fine-tuning.
camvid: the U-Net teacher with 50% of its channels removed (remove 0.75 of params), hard vs soft, fine-tuned;
unstructured 50/70/90%. Every row records metric, params, MACs, bytes, zipped bytes and the batch-1 latency
ratio measured in the same run. Results: benchmarks/results/prune_<task>.json, written after every row.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from slimcv.config import DataConfig
from slimcv.data import load_data
from slimcv.artifact import load_run_model
from slimcv.engine.loop import evaluate
from slimcv.engine.train import make_eval_loader
from slimcv.prune.prune import prune
from slimcv.prune.unstructured import prune_unstructured
from slimcv.artifact import metric_key, run_data_config

HERE = Path(__file__).parent
TEACHERS = {"cifar": "runs/bench/cifar10_teacher", "camvid": "runs/bench/camvid_teacher"}


def structured_runs(task: str, epochs: int) -> dict[str, dict]:
    if task == "cifar":
        base = {"remove": 0.6, "target": "macs", "finetune_epochs": epochs,
                "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}}
        return {"l1": {**base, "importance": "l1"}, "taylor": {**base, "importance": "taylor"},
                "activation": {**base, "importance": "activation"},
                "soft_l2": {**base, "method": "soft"},
                # the longer schedule with KD from the unpruned model: what the <= 0.3 pt target needs
                "l1_kd_long": {**base, "importance": "l1", "finetune_epochs": max(8, epochs),
                               "distill": [{"name": "kd", "weight": 1.0, "temperature": 4.0}]}}
    base = {"remove": 0.75, "target": "params", "finetune_epochs": epochs,
            "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-4}}
    return {"l1": {**base, "importance": "l1"}, "soft_l2": {**base, "method": "soft"},
            "l1_kd": {**base, "importance": "l1", "distill": [{"name": "kd", "weight": 0.5, "temperature": 1.0}]}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=["cifar", "camvid"])
    p.add_argument("--teacher")
    p.add_argument("--finetune-epochs", type=int)
    p.add_argument("--runs", nargs="*", help="structured runs to do (default: all); 'none' skips them")
    p.add_argument("--threads", type=int)
    p.add_argument("--out")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    teacher = args.teacher or TEACHERS[args.task]
    epochs = args.finetune_epochs if args.finetune_epochs is not None else (3 if args.task == "cifar" else 10)
    out = Path(args.out or HERE / "results" / f"prune_{args.task}.json")
    results = json.loads(out.read_text()) if out.is_file() else {}
    results.update(teacher=teacher, finetune_epochs=epochs, threads=torch.get_num_threads())
    data_cfg = DataConfig(**run_data_config(teacher))
    data = load_data(data_cfg)
    key = metric_key(data.task)

    def save() -> None:
        out.write_text(json.dumps(results, indent=2, default=float) + "\n")

    runs = structured_runs(args.task, epochs)
    chosen = [] if args.runs == ["none"] else (args.runs or list(runs))
    for name in chosen:
        start = time.perf_counter()
        cfg = {"source": teacher, "data": data_cfg.model_dump(mode="json"), "progress": False,
               "out_dir": f"runs/bench/prune_{args.task}_{name}", **runs[name]}
        r = prune(cfg, data)
        results.setdefault("structured", {})[name] = {
            "before": r.before, "after": r.after, "steps": [{k: v for k, v in s.items() if k != "metrics"}
                                                            for s in r.steps],
            "drop": r.before[key] - r.after[key], "macs_reduction": r.before["macs"] / r.after["macs"],
            "latency_speedup": r.before.get("latency_ms", 0) / max(r.after.get("latency_ms", 1), 1e-9),
            "wall_s": time.perf_counter() - start}
        print(f"{name}: {key} {r.before[key]:.2f} -> {r.after[key]:.2f}, MACs /{results['structured'][name]['macs_reduction']:.2f}",
              flush=True)
        save()

    loader = make_eval_loader(data.val, data.config.eval_batch_size or data.config.batch_size, 2,
                              data.info.ignore_index)
    for sparsity in (0.5, 0.7, 0.9):
        model, spec = load_run_model(teacher)
        report = prune_unstructured(model, sparsity, num_classes=spec["num_classes"])
        m = evaluate(model, loader, torch.device("cpu"), task=data.task, num_classes=data.num_classes,
                     ignore_index=data.info.ignore_index, class_names=data.info.class_names)
        results.setdefault("unstructured", {})[str(sparsity)] = {key: m[key], **asdict(report)}
        print(f"unstructured {sparsity:.0%}: {key} {m[key]:.2f}", flush=True)
        save()
    print(f"-> {out}")


if __name__ == "__main__":
    main()
