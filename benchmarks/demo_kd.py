"""The demo's distillation effect over seeds: a student with 64 labelled and 448 unlabelled images, against the
same student trained on its 64 labelled images alone for the same number of optimizer steps.

    python benchmarks/demo_kd.py --teacher runs/demo/teacher --seeds 0 1 2 3 4

The teacher is the demo's (U-Net w8, 30 epochs on 512 labelled synthetic-shapes images; trained here when
--teacher is not given). Each seed trains the control (96 epochs of 64 images) and the distilled student
(12 epochs of 64 labelled + 448 unlabelled images, offline KD at T=1) with the demo's settings. Printed: one row
per seed and the mean effect; written: benchmarks/results/demo_kd.json with the CPU's flags. Target: a
positive mean effect.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

HERE = Path(__file__).parent


def demo_teacher(teacher: str | None, out: str) -> str:
    """``teacher``, or the demo's teacher trained (or resumed) in ``out/teacher`` with the demo's settings."""
    if teacher is not None:
        return teacher
    import slimcv
    from slimcv.pipeline.demo import demo_recipe

    recipe = demo_recipe()
    stage = next(s for s in recipe["stages"] if s["name"] == "teacher")
    teacher = str(Path(out) / "teacher")
    slimcv.train({**recipe["models"]["teacher"], "data": recipe["data"], "epochs": stage["epochs"],
                  "optim": stage["optim"], "out_dir": teacher, "resume": True, "progress": False,
                  "tensorboard": False, "threads": 1})
    return teacher


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default=None, help="the demo's teacher folder (default: train one)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--out", default="runs/bench/demo_kd")
    p.add_argument("--json", default=str(HERE / "results" / "demo_kd.json"))
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    import slimcv
    from slimcv._console import print_table
    from slimcv.hardware import cpu_features
    from slimcv.pipeline.demo import demo_recipe

    recipe = demo_recipe()
    stages = {s["name"]: s for s in recipe["stages"]}
    models, data = recipe["models"], recipe["data"]
    quiet = {"progress": False, "tensorboard": False, "threads": 1}
    teacher = demo_teacher(args.teacher, args.out)
    student = models["student"]
    rows = []
    for seed in args.seeds:
        start = time.perf_counter()
        alone = slimcv.train({**student, "data": {**data, **stages["student"]["data"]}, "seed": seed,
                              "epochs": stages["student"]["epochs"], "optim": stages["student"]["optim"],
                              "out_dir": f"{args.out}/alone_{seed}", "resume": True, **quiet})
        kd = slimcv.distill({**student, "teacher": teacher, "data": {**data, **stages["distill"]["data"]},
                             "seed": seed, "epochs": stages["distill"]["epochs"], "optim": stages["distill"]["optim"],
                             "mode": "offline", "losses": stages["distill"]["losses"], "alpha": 1.0,
                             "unlabelled": stages["distill"]["unlabelled"], "out_dir": f"{args.out}/kd_{seed}",
                             "resume": True, **quiet})
        a, k = alone.metrics["miou"], kd.train.metrics["miou"]  # the last epoch's, as the demo prints them
        rows.append({"seed": seed, "alone": a, "distilled": k, "effect": k - a, "alone_best": alone.best["value"],
                     "distilled_best": kd.train.best["value"], "seconds": round(time.perf_counter() - start, 1)})
        print(json.dumps(rows[-1]), flush=True)
    effects = [r["effect"] for r in rows]
    mean = statistics.mean(effects)
    print_table("demo KD effect (val mIoU after the last epoch)", ["seed", "alone", "distilled", "effect"],
                [(r["seed"], r["alone"], r["distilled"], r["effect"]) for r in rows] + [("mean", None, None, mean)])
    Path(args.json).write_text(json.dumps({"cpu": cpu_features(), "teacher": teacher, "rows": rows,
                                           "mean_effect": mean, "target_met": mean > 0}, indent=1) + "\n")


if __name__ == "__main__":
    main()
