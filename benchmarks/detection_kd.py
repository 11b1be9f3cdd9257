"""Detection distillation over seeds: a slimdet_s student trained alone against the same student distilled from a
slimdet_m teacher (neck features + head KD at matched locations), same schedule, same seeds.

    python benchmarks/detection_kd.py --sets synthetic --seeds 0 1 2 --epochs 20
    python benchmarks/detection_kd.py --sets raccoon --seeds 0 1 2 --epochs 20 --json benchmarks/results/detection_kd_raccoon.json

Data: synthetic-shapes:detection at 128x128 (512 training, 128 validation images) and the raccoon set (Pascal
VOC layout, 160/40 images, one class) at 320x320. The teacher (slimdet_m, --teacher-epochs, default 30) is
trained here once and reused (resumable). Each seed trains the control (`slimcv.train`) and the distilled
student (`slimcv.distill`, the detection default: the neck's features) with AdamW lr 2e-3, weight decay 0.05, 1 warm-up epoch,
cosine, the data's default augmentations. Printed: one row per seed and the mean effect; written:
benchmarks/results/detection_kd.json with the CPU's flags. Target: a mean gain in val mAP above 0 on each set.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
OPTIM = {"name": "adamw", "lr": 0.002, "weight_decay": 0.05}
COMMON = {"optim": OPTIM, "schedule": {"warmup_epochs": 1}, "progress": False, "tensorboard": False,
          "resume": True}


def datasets(raccoon: str | None) -> dict[str, dict[str, Any]]:
    sets = {"synthetic": {"spec": "synthetic-shapes:detection", "options": {"size": 128}, "batch_size": 16}}
    if raccoon and Path(raccoon).is_dir():
        sets["raccoon"] = {"spec": f"voc-detection:{raccoon}", "size": [320, 320], "batch_size": 8}
    return sets


def one_set(name: str, data: dict, args, out: Path, save) -> list[dict[str, Any]]:
    import slimcv

    teacher = out / f"{name}_teacher"
    start = time.perf_counter()
    t = slimcv.train(args.teacher, data=data, epochs=args.teacher_epochs, out_dir=str(teacher), seed=0, **COMMON)
    print(f"{name} teacher {args.teacher}: map {t.metrics['map']:.2f} ({time.perf_counter() - start:.0f} s)",
          flush=True)
    rows = []
    for seed in args.seeds:
        start = time.perf_counter()
        alone = slimcv.train(args.student, data=data, epochs=args.epochs, out_dir=str(out / f"{name}_alone_{seed}"),
                             seed=seed, **COMMON)
        mid = time.perf_counter()
        kd = slimcv.distill(args.student, teacher=str(teacher), data=data, epochs=args.epochs,
                            out_dir=str(out / f"{name}_kd_{seed}"), seed=seed, **COMMON)
        rows.append({"dataset": name, "seed": seed, "teacher_map": t.metrics["map"],
                     "alone_map": alone.metrics["map"], "kd_map": kd.metrics["map"],
                     "alone_map50": alone.metrics["map50"], "kd_map50": kd.metrics["map50"],
                     "gain": kd.metrics["map"] - alone.metrics["map"],
                     "alone_s": round(mid - start, 1), "kd_s": round(time.perf_counter() - mid, 1)})
        print(json.dumps(rows[-1]), flush=True)
        save(rows)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--raccoon", default=str(HERE.parent.parent / "shared" / "data" / "raccoon"))
    p.add_argument("--sets", nargs="+", default=["synthetic", "raccoon"], help="which data sets to run")
    p.add_argument("--teacher", default="slimdet_m")
    p.add_argument("--student", default="slimdet_s")
    p.add_argument("--teacher-epochs", type=int, default=30)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/bench/detection_kd")
    p.add_argument("--json", default=str(HERE / "results" / "detection_kd.json"))
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from slimcv._console import print_table
    from slimcv.hardware import cpu_features

    rows: list[dict[str, Any]] = []

    def save(new_rows: list[dict[str, Any]]) -> None:  # after every seed: a stopped run keeps what it measured
        Path(args.json).write_text(json.dumps({"cpu": cpu_features(), "threads": args.threads, "optim": OPTIM,
                                               "teacher": args.teacher, "student": args.student,
                                               "epochs": args.epochs, "rows": rows + new_rows}, indent=1) + "\n")

    for name, data in datasets(args.raccoon).items():
        if name in args.sets:
            rows += one_set(name, data, args, Path(args.out), save)
    print_table("detection KD: student alone vs distilled (val mAP)",
                ["data", "seed", "teacher", "alone", "distilled", "gain"],
                [(r["dataset"], r["seed"], r["teacher_map"], r["alone_map"], r["kd_map"], r["gain"]) for r in rows])
    for name in {r["dataset"] for r in rows}:
        gains = [r["gain"] for r in rows if r["dataset"] == name]
        print(f"{name}: mean gain {statistics.mean(gains):+.2f} mAP over {len(gains)} seeds")


if __name__ == "__main__":
    main()
