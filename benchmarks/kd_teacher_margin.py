"""KD on the demo's data with a teacher that has a real margin: students alone and distilled, run by spec.

    python benchmarks/kd_teacher_margin.py "teacher,w=8,ep=30" "alone,seed=0" "kd,seed=0,t=30" \\
        "kd,seed=0,t=30,full=1" "kd,seed=0,t=30,T=2" [--out benchmarks/results/kd_teacher_margin.json]

Each spec is ``kind,key=value,...``: kind ``teacher`` or ``alone`` trains a U-Net (``w`` base width, default 4;
``ep`` epochs, default 12; ``lr`` Adam rate, default 0.005; ``wu`` warm-up epochs; ``seed``); kind ``kd``
distils the same student from the teacher trained for ``t`` epochs (``T`` temperature, ``kw`` KD weight,
``alpha`` CE weight, ``l`` loss name, ``mode`` offline/online, ``full=1`` a full-size fp16 cache; without it
the cache takes the default format). The data is `slimcv demo`'s (synthetic-shapes, 512 training images,
64x64). The speed probe is off (FP32), so runs compare on any CPU; every finished spec is kept in the JSON
and not run again.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("specs", nargs="+")
    p.add_argument("--out-dir", default="runs/bench/kd_teacher_margin")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "kd_teacher_margin.json"))
    args = p.parse_args()
    os.environ.setdefault("SLIMCV_SPEED_PROBE", "0")
    import slimcv
    from slimcv.hardware import cpu_features
    from slimcv.pipeline.demo import demo_recipe

    out = Path(args.out)
    res = json.loads(out.read_text()) if out.is_file() else {}
    res["cpu"] = cpu_features()
    runs = res.setdefault("runs", {})
    base = {"data": demo_recipe("synthetic-shapes")["data"], "threads": 1, "progress": False, "tensorboard": False,
            "resume": False}
    root = Path(args.out_dir)
    for spec in args.specs:
        if spec in runs:
            continue
        kind, *rest = spec.split(",")
        kw = dict(r.split("=") for r in rest)
        cfg = {**base, "optim": {"name": "adam", "lr": float(kw.get("lr", 0.005))},
               "schedule": {"name": "cosine", "warmup_epochs": float(kw.get("wu", 0))}, "model": "unet",
               "model_kwargs": {"base_width": int(kw.get("w", 4)), "depth": 4}, "epochs": int(kw.get("ep", 12)),
               "seed": int(kw.get("seed", 0)), "out_dir": str(root / spec)}
        t = time.perf_counter()
        if kind in ("teacher", "alone"):
            metric = slimcv.train(cfg).metrics["miou"]
        else:
            loss = {"name": kw.get("l", "kd"), "weight": float(kw.get("kw", 1)), "temperature": float(kw.get("T", 1))}
            extra = {"cache": {"scale": 1.0, "dtype": "fp16"}} if kw.get("full") else {}
            metric = slimcv.distill({**cfg, "teacher": str(root / f"teacher,w=8,ep={kw['t']}"),
                                     "mode": kw.get("mode", "offline"), "losses": [loss],
                                     "alpha": float(kw.get("alpha", 1)), **extra}).metrics["miou"]
        runs[spec] = {"miou": metric, "seconds": time.perf_counter() - t}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"{spec}: {metric:.2f} mIoU ({runs[spec]['seconds']:.0f} s)", flush=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
