"""Which KD settings help: the demo's student trained alone against KD variants, over several seeds.

    python benchmarks/kd_defaults.py [--seeds 0 1 2] [--runs alone kd_t1 kd_t1_online ...]
        [--out benchmarks/results/kd_defaults_synthetic.json]

The setting is `slimcv demo`'s (synthetic-shapes, U-Net width 8 teacher, width 4 student, 12 epochs, Adam
0.005). The teacher is trained once (seed 0); every student run starts from the same seed as its control, so
a variant's effect is its mean difference to `alone` over the seeds, printed with the spread. Results are
written after every run, and a finished run is not repeated.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KD = {"name": "kd", "weight": 1.0, "temperature": 1.0}
# name -> distill settings (None: the student trained alone)
RUNS: dict[str, dict | None] = {
    "alone": None,
    "kd_t1": {"mode": "offline", "losses": [KD]},  # the demo's setting before this benchmark
    "kd_t1_full_cache": {"mode": "offline", "losses": [KD], "cache": {"scale": 1.0, "dtype": "fp16"}},
    "kd_t1_online": {"mode": "online", "losses": [KD]},
    "kd_t2_online": {"mode": "online", "losses": [{**KD, "temperature": 2.0}]},
    "kd_t4_online": {"mode": "online", "losses": [{**KD, "temperature": 4.0}]},
    "kd_t1_w3_online": {"mode": "online", "losses": [{**KD, "weight": 3.0}]},
    "kd_t1_warmup_online": {"mode": "online", "losses": [KD], "kd_warmup_epochs": 3},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", default="runs/bench/kd_defaults")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "kd_defaults_synthetic.json"))
    args = p.parse_args()
    import slimcv
    from slimcv._console import print_table
    from slimcv.hardware import cpu_features
    from slimcv.pipeline.demo import demo_recipe

    recipe = demo_recipe("synthetic-shapes")
    teacher_stage = recipe["stages"][0]
    base = {"data": recipe["data"], "epochs": args.epochs, "optim": teacher_stage["optim"], "threads": args.threads,
            "progress": False, "tensorboard": False, "resume": False}
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    results.update(cpu=cpu_features(), threads=args.threads, epochs=args.epochs, setting="slimcv demo (synthetic)")
    runs = results.setdefault("runs", {})
    root = Path(args.out_dir)

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")

    teacher_dir = root / "teacher"
    if "teacher" not in results:
        t = time.perf_counter()
        r = slimcv.train({**base, **recipe["models"]["teacher"], "out_dir": str(teacher_dir)})
        results["teacher"] = {"miou": r.metrics["miou"], "seconds": time.perf_counter() - t}
        save()
    student = recipe["models"]["student"]
    for seed in args.seeds:
        for name in args.runs:
            key = f"{name}/seed{seed}"
            if key in runs:
                continue
            cfg = {**base, **student, "seed": seed, "out_dir": str(root / name / f"seed{seed}")}
            t = time.perf_counter()
            if RUNS[name] is None:
                metric = slimcv.train(cfg).metrics["miou"]
            else:
                metric = slimcv.distill({**cfg, "teacher": str(teacher_dir), **RUNS[name]}).metrics["miou"]
            runs[key] = {"miou": metric, "seconds": time.perf_counter() - t}
            save()
    rows = []
    for name in args.runs:
        effects = [runs[f"{name}/seed{s}"]["miou"] - runs[f"alone/seed{s}"]["miou"] for s in args.seeds
                   if f"{name}/seed{s}" in runs and f"alone/seed{s}" in runs]
        vals = [runs[f"{name}/seed{s}"]["miou"] for s in args.seeds if f"{name}/seed{s}" in runs]
        if not vals:
            continue
        spread = statistics.stdev(effects) if len(effects) > 1 else 0.0
        results.setdefault("summary", {})[name] = {"mean_miou": statistics.mean(vals), "effects": effects,
                                                   "mean_effect": statistics.mean(effects) if effects else None}
        rows.append((name, f"{statistics.mean(vals):.2f}", f"{statistics.mean(effects):+.2f}" if effects else "-",
                     f"{spread:.2f}", " ".join(f"{e:+.1f}" for e in effects)))
    save()
    print_table(f"KD effect over {len(args.seeds)} seeds (teacher {results['teacher']['miou']:.2f} mIoU)",
                ["run", "mean mIoU", "mean effect", "sd", "per seed"], rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
