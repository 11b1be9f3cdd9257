"""Detectors trained from scratch on this CPU: slimcv's own (slimdet_s) and torchvision's SSDlite.

    python benchmarks/detection.py --raccoon ../shared/data/raccoon --out runs/bench/detection

For each (dataset, model): `slimcv.train` from random initialisation (AdamW, lr 2e-3, weight decay 0.05,
1 warm-up epoch, cosine; the data's default augmentations: scale-crop, flip, colour jitter), then
`slimcv export` (the network as one static graph at the trained size) and `slimcv bench` of the network in
every runtime of this machine at batch 1, interleaved, with the box selection beside it timed on its own.
Datasets: synthetic-shapes:detection at 128x128 (512 training, 128 validation images) and the raccoon set
(Pascal VOC layout, 160/40 images, one class) at 320x320.

Printed: one table; written: benchmarks/results/detection.json (val mAP@[.5:.95] and mAP@.5, training
images/s, latency per runtime, the CPU's flags). Targets are relative (no published from-scratch figures
exist for these sets): the detector learns (mAP50 well above chance) and ORT FP32 agrees with PyTorch.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
OPTIM = {"name": "adamw", "lr": 0.002, "weight_decay": 0.05}


def datasets(raccoon: str | None, quick: bool) -> dict[str, dict[str, Any]]:
    sets = {"synthetic": {"data": {"spec": "synthetic-shapes:detection", "options": {"size": 128},
                                   "batch_size": 16}, "epochs": 4 if quick else 30}}
    if raccoon and Path(raccoon).is_dir():
        sets["raccoon"] = {"data": {"spec": f"voc-detection:{raccoon}", "size": [320, 320], "batch_size": 8},
                           "epochs": 3 if quick else 40}
    return sets


def one(name: str, model: str, setting: dict[str, Any], out: Path, threads: int) -> dict[str, Any]:
    import slimcv

    run = out / f"{name}_{model}"
    start = time.perf_counter()
    result = slimcv.train(model, data=setting["data"], epochs=setting["epochs"], out_dir=str(run), optim=OPTIM,
                          schedule={"warmup_epochs": 1}, progress=False, tensorboard=False, resume=True)
    train_s = time.perf_counter() - start
    exported = slimcv.export(str(run), run / "deploy" / "model.onnx")
    report = slimcv.bench([str(run)], batch_sizes=[1], runs=30, threads=threads, memory=False, quiet=True)
    m = report.models[0]
    best = result.history[[h["epoch"] for h in result.history].index(result.best["epoch"])]["val"]
    return {"dataset": name, "model": model, "epochs": setting["epochs"], "size": m.input_shape[1:],
            "params_m": m.params / 1e6, "gmacs": m.macs / 1e9, "map": best["map"], "map50": best["map50"],
            "final_map": result.metrics["map"], "best_epoch": result.best["epoch"],
            "train_images_per_s": sum(h["train"]["images_per_s"] for h in result.history) / len(result.history),
            "train_s": round(train_s, 1), "latency_ms": {r.runtime: r.latency_ms.median for r in m.runtimes},
            "box_selection_ms": m.box_selection_ms,
            "export_max_abs_diff": exported.agreement.max_abs_diff if exported.agreement else None,
            "export_box_agreement": exported.agreement.argmax_agreement if exported.agreement else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--raccoon", default=str(HERE.parent.parent / "shared" / "data" / "raccoon"))
    p.add_argument("--out", default="runs/bench/detection")
    p.add_argument("--models", nargs="+", default=["slimdet_s", "ssdlite320_mobilenet_v3_large"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="a few epochs: checks the script runs")
    p.add_argument("--json", default=str(HERE / "results" / "detection.json"))
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from slimcv._console import print_table
    from slimcv.hardware import cpu_features

    rows = []
    for name, setting in datasets(args.raccoon, args.quick).items():
        for model in args.models:
            rows.append(one(name, model, setting, Path(args.out), args.threads))
            print(json.dumps(rows[-1]), flush=True)
    runtimes = sorted({rt for r in rows for rt in r["latency_ms"]})
    print_table(f"detectors from scratch, {args.threads} thread(s)",
                ["data", "model", "size", "epochs", "mAP", "mAP50", "train img/s",
                 *[f"{rt} ms" for rt in runtimes], "select ms"],
                [(r["dataset"], r["model"], "x".join(map(str, r["size"])), r["epochs"], r["map"], r["map50"],
                  r["train_images_per_s"], *[r["latency_ms"].get(rt) for rt in runtimes], r["box_selection_ms"])
                 for r in rows])
    if not args.quick:
        Path(args.json).write_text(json.dumps({"cpu": cpu_features(), "threads": args.threads, "optim": OPTIM,
                                               "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
