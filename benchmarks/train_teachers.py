"""Train the segmentation (CamVid U-Net) and classification (CIFAR-10 ResNet) teachers; print and write JSON.

    python benchmarks/train_teachers.py camvid            # CPU budget schedule (configs/*_cpu.yaml)
    python benchmarks/train_teachers.py cifar10 --full    # the GPU schedule (configs/*_full.yaml)
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

import slimcv
from slimcv.config import read_yaml, set_by_path

HERE = Path(__file__).parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=["camvid", "cifar10"])
    p.add_argument("--full", action="store_true", help="the full (GPU) schedule")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    name = f"{args.task}_teacher_{'full' if args.full else 'cpu'}"
    cfg = read_yaml(HERE / "configs" / f"{name}.yaml")
    cfg["resume"] = args.resume
    cfg["progress"] = False
    for item in args.set:
        k, _, v = item.partition("=")
        set_by_path(cfg, k, v)
    start = time.perf_counter()
    result = slimcv.train(cfg)
    wall = time.perf_counter() - start
    epoch_times = [r["epoch_time_s"] for r in result.history]
    out = {
        "benchmark": name,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "hardware": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                     "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "config": cfg,
        "wall_time_s": wall,
        "mean_epoch_time_s": sum(epoch_times) / max(len(epoch_times), 1),
        "best": result.best,
        "final": result.metrics,
        "history": [{"epoch": r["epoch"], "loss": r["train"]["loss"], **{k: v for k, v in r.get("val", {}).items()
                                                                          if isinstance(v, float)}}
                    for r in result.history],
    }
    path = HERE / "results" / f"{name}.json"
    path.write_text(json.dumps(out, indent=2, default=float) + "\n")
    key = "miou" if "miou" in result.metrics else "top1"
    print(f"{name}: {key} {result.metrics[key]:.2f} (best {result.best.get('value', float('nan')):.2f} at epoch "
          f"{result.best.get('epoch')}), wall {wall / 60:.1f} min, {out['mean_epoch_time_s']:.1f} s/epoch -> {path}")


if __name__ == "__main__":
    main()
