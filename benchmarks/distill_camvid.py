"""CamVid distillation: the U-Net teacher -> a 16x cheaper U-Net student, alone vs offline KD vs CWD.

    python benchmarks/train_teachers.py camvid        # first: the teacher (runs/bench/camvid_teacher)
    python benchmarks/distill_camvid.py [--epochs 20] [--runs alone kd cwd]

All runs share one schedule (the teacher's augmentation and optimiser, student width 4); figures go to
benchmarks/results/distill_camvid.json.
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
    "kd": {"mode": "offline", "alpha": 1.0, "losses": [{"name": "kd", "weight": 1.0, "temperature": 4.0}]},
    "cwd": {"mode": "offline", "alpha": 1.0, "losses": [{"name": "cwd", "weight": 3.0, "temperature": 4.0}]},
    "kd_t1": {"mode": "offline", "alpha": 1.0, "losses": [{"name": "kd", "weight": 1.0, "temperature": 1.0}]},
    "kd_online": {"mode": "online", "alpha": 1.0, "losses": [{"name": "kd", "weight": 1.0, "temperature": 4.0}]},
    # photometric augmentation: the cache was made from un-jittered images, the online teacher sees the
    # jittered ones; the pair measures what offline mode loses to colour jitter on the same schedule
    "kd_t1_jitter": {"mode": "offline", "alpha": 1.0, "jitter": True,
                     "losses": [{"name": "kd", "weight": 1.0, "temperature": 1.0}]},
    "kd_t1_jitter_online": {"mode": "online", "alpha": 1.0, "jitter": True,
                            "losses": [{"name": "kd", "weight": 1.0, "temperature": 1.0}]},
    # storage formats (kd_t1 is uint8 at half the training size)
    "kd_t1_fp16": {"mode": "offline", "alpha": 1.0, "cache": {"dtype": "fp16", "scale": 1.0},
                   "losses": [{"name": "kd", "weight": 1.0, "temperature": 1.0}]},
    "kd_t1_top3": {"mode": "offline", "alpha": 1.0, "cache": {"dtype": "topk", "topk": 3, "scale": 1.0},
                   "losses": [{"name": "kd", "weight": 1.0, "temperature": 1.0}]},
    "kd_t1_feature": {"mode": "online", "alpha": 1.0,
                      "losses": [{"name": "kd", "weight": 1.0, "temperature": 1.0},
                                 {"name": "feature", "weight": 1.0, "layers": [["decoders.3", "decoders.3"]]}]},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="runs/bench/camvid_teacher")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--width", type=int, default=4)
    p.add_argument("--runs", nargs="+", default=["alone", "kd", "cwd"], choices=list(RUNS))
    p.add_argument("--threads", type=int, help="torch threads (1 avoids OpenMP thrashing on a shared machine)")
    p.add_argument("--out", default=str(HERE / "results" / "distill_camvid.json"))
    args = p.parse_args()
    base = read_yaml(HERE / "configs" / "camvid_teacher_cpu.yaml")
    base.update(model_kwargs={"base_width": args.width, "depth": 4}, epochs=args.epochs, progress=False,
                tensorboard=False, eval_every=args.epochs, threads=args.threads, resume=True)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    for name in args.runs:
        cfg = {**base, "out_dir": f"runs/bench/camvid_student_{name}"}
        run = dict(RUNS[name] or {})
        if run.pop("jitter", False):
            cfg["data"] = {**cfg["data"], "augment": [*cfg["data"]["augment"], "color_jitter"]}
        start = time.perf_counter()
        if RUNS[name] is None:
            r = slimcv.train(cfg)
            history, metrics = r.history, r.metrics
        else:
            cache = {"dir": "runs/bench/teacher_cache", **run.pop("cache", {})}
            r = distill({**cfg, "teacher": args.teacher, "cache": cache, **run})
            history, metrics = r.train.history, r.train.metrics
            results["teacher"] = r.comparison[0]
            results.setdefault("student_macs", r.comparison[1]["macs"])
            if r.cache:
                results[f"cache_{name}"] = json.loads((r.cache / "meta.json").read_text())
        results[name] = {"miou": metrics["miou"], "per_class_iou": metrics["per_class_iou"],
                         "wall_s": time.perf_counter() - start,
                         "mean_epoch_train_s": sum(h["epoch_time_s"] for h in history[:-1]) / max(len(history) - 1, 1),
                         "median_epoch_s": sorted(h["epoch_time_s"] for h in history)[len(history) // 2]}
        print(f"{name}: mIoU {metrics['miou']:.2f}, {results[name]['mean_epoch_train_s']:.1f} s/epoch")
        # written after every run, so a session that stops mid-benchmark keeps what finished
        out.write_text(json.dumps({**results, "epochs": args.epochs, "width": args.width}, indent=2,
                                  default=float) + "\n")
    print(f"{'run':10s} {'mIoU':>6s} {'s/epoch':>8s}")
    for name in args.runs:
        print(f"{name:10s} {results[name]['miou']:6.2f} {results[name]['mean_epoch_train_s']:8.1f}")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
