"""CIFAR-10 distillation: the ResNet-20 teacher -> ResNet-8 (3.4x fewer MACs), alone vs kd vs dkd vs dist.

    python benchmarks/train_teachers.py cifar10       # first: the teacher (runs/bench/cifar10_teacher)
    python benchmarks/distill_cifar.py [--epochs 10] [--runs alone kd dkd]

The issue's pairing is resnet56 -> resnet20; a resnet56 teacher costs about 6 min per epoch on 2 CPU
cores, so the CPU budget uses the 10-epoch resnet20 teacher and a resnet8 student (full schedule for a
GPU: --teacher <resnet56 run> --student resnet20 --epochs 240). All runs share the teacher's schedule
(SGD 0.1, cosine, batch 128); online KD (classification has no offline cache). Results go to
benchmarks/results/distill_cifar.json after every run.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import slimcv
from slimcv.config import read_yaml
from slimcv.distill.distill import distill

HERE = Path(__file__).parent
RUNS = {
    "alone": None,
    "kd": {"alpha": 1.0, "losses": [{"name": "kd", "weight": 1.0, "temperature": 4.0}]},
    "dkd": {"alpha": 1.0, "losses": [{"name": "dkd", "weight": 1.0, "temperature": 4.0}]},
    "dist": {"alpha": 1.0, "losses": [{"name": "dist", "weight": 2.0, "temperature": 1.0}]},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="runs/bench/cifar10_teacher")
    p.add_argument("--student", default="resnet8")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--runs", nargs="+", default=["alone", "kd", "dkd"], choices=list(RUNS))
    p.add_argument("--threads", type=int, help="torch threads (1 avoids OpenMP thrashing on a shared machine)")
    p.add_argument("--out", default=str(HERE / "results" / "distill_cifar.json"))
    args = p.parse_args()
    base = read_yaml(HERE / "configs" / "cifar10_teacher_cpu.yaml")
    base.update(model=args.student, epochs=args.epochs, progress=False, tensorboard=False, eval_every=args.epochs,
                threads=args.threads, resume=True)  # resume: a stopped benchmark continues where it was
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    results.update(epochs=args.epochs, student=args.student, threads=args.threads)
    for name in args.runs:
        cfg = {**base, "out_dir": f"runs/bench/cifar10_{args.student}_{name}"}
        start = time.perf_counter()
        if RUNS[name] is None:
            r = slimcv.train(cfg)
            history, metrics = r.history, r.metrics
        else:
            r = distill({**cfg, "teacher": args.teacher, "mode": "online", **RUNS[name]})
            history, metrics = r.train.history, r.train.metrics
            results["teacher"] = r.comparison[0]
            results["student_cost"] = {k: r.comparison[1][k] for k in ("params", "macs")}
        results[name] = {"top1": metrics["top1"], "per_class_acc": metrics["per_class_acc"],
                         "wall_s": time.perf_counter() - start,
                         "mean_epoch_train_s": sum(h["epoch_time_s"] for h in history[:-1]) / max(len(history) - 1, 1)}
        print(f"{name}: top-1 {metrics['top1']:.2f}, {results[name]['mean_epoch_train_s']:.1f} s/epoch", flush=True)
        out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"{'run':8s} {'top-1':>6s} {'s/epoch':>8s}")
    for name in args.runs:
        print(f"{name:8s} {results[name]['top1']:6.2f} {results[name]['mean_epoch_train_s']:8.1f}")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
