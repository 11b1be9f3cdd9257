"""Training speed on a GPU: images/s and the accuracy reached with the per-sample loader against batches made on
the device (decoded uint8 samples held in GPU memory, whole batches augmented there), same schedule.

    python benchmarks/gpu_speed.py --data ../shared/data [--epochs 30] [--models cifar_resnet20 camvid_w32]
    python benchmarks/gpu_speed.py --quick          # synthetic data, a few epochs: checks the script runs

Targets: >= 5x the loader's images/s for ResNet-20 on CIFAR-10 and >= 3x for the CamVid U-Net w32 at the same
accuracy (within 0.3 pt). Without CUDA it runs on the CPU and says so (the batched path is opt-in there).
Writes benchmarks/results/gpu_speed.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {  # name: model, kwargs, dataset, size, batch, optimizer, augment
    "cifar_resnet20": ("resnet20", {}, "cifar10", None, 128, {"name": "sgd", "lr": 0.1}, ["pad_crop", "hflip"]),
    "cifar_resnet56": ("resnet56", {}, "cifar10", None, 128, {"name": "sgd", "lr": 0.1}, ["pad_crop", "hflip"]),
    "camvid_w16": ("unet", {"base_width": 16, "depth": 4}, "camvid", [176, 240], 8, {"name": "adam", "lr": 0.002},
                   ["rotate", "shift", "hflip"]),
    "camvid_w32": ("unet", {"base_width": 32, "depth": 4}, "camvid", [360, 480], 8, {"name": "adam", "lr": 0.002},
                   ["rotate", "shift", "hflip"]),
}


def run_one(name: str, mode: str, data_root: Path | None, epochs: int, out: Path, quick: bool) -> dict:
    import torch

    import slimcv

    model, kwargs, dataset, size, batch, optim, augment = MODELS[name]
    if quick:
        data = {"spec": "synthetic-shapes" + (":classification" if dataset == "cifar10" else ""),
                "options": {"size": 32, "length": 256}, "val_subset": 64}
    else:
        data = {"spec": f"{dataset}:{data_root / dataset}", **({"size": size} if size else {})}
    data.update(batch_size=batch, augment=augment, batched_augment=mode)
    start = time.perf_counter()
    r = slimcv.train({"model": model, "model_kwargs": kwargs, "data": data, "epochs": epochs, "optim": optim,
                      "device": "auto", "progress": False, "tensorboard": False, "out_dir": str(out / f"{name}_{mode}"),
                      "resume": False})
    speeds = [h["train"]["images_per_s"] for h in r.history[1:]] or [r.history[0]["train"]["images_per_s"]]
    return {"model": name, "path": "device batches" if mode == "on" else "per-sample loader", "epochs": epochs,
            "images_per_s": sorted(speeds)[len(speeds) // 2], "metric": r.best.get("metric"),
            "value": r.best.get("value"), "seconds": time.perf_counter() - start,
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=Path("runs/gpu_speed"))
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU here: timing the CPU, where batches made on the device are opt-in", file=sys.stderr)
    rows = []
    for name in args.models:
        for mode in ("off", "on"):
            rows.append(run_one(name, mode, args.data, 3 if args.quick else args.epochs, args.out, args.quick))
            print(json.dumps(rows[-1]))
    print(f"{'model':16s} {'path':18s} {'img/s':>9s} {'metric':>8s} {'x loader':>8s}")
    for off, on in zip(rows[::2], rows[1::2]):
        for r in (off, on):
            print(f"{r['model']:16s} {r['path']:18s} {r['images_per_s']:9.0f} {r['value'] or 0:8.2f} "
                  f"{r['images_per_s'] / off['images_per_s']:8.2f}")
    dest = ROOT / "benchmarks" / "results" / ("gpu_speed_quick.json" if args.quick else "gpu_speed.json")
    dest.write_text(json.dumps({"rows": rows}, indent=1))
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
