"""Accuracy parity of bf16 and FP32 training: pairs of run folders trained on the same schedule, side by side.

    slimcv train --config benchmarks/configs/camvid_teacher_cpu.yaml --epochs 12 --threads 1 --workers 1 \\
        --amp none --no-channels-last -o runs/parity/camvid_fp32
    slimcv train --config benchmarks/configs/camvid_teacher_cpu.yaml --epochs 12 --threads 1 --workers 1 \\
        --amp bf16 --channels-last -o runs/parity/camvid_bf16
    python benchmarks/train_parity.py runs/parity/camvid_fp32 runs/parity/camvid_bf16 [A B ...]

Each pair must share everything but the precision and layout; the script checks that, prints validation
metric per evaluated epoch and the wall time per epoch, and writes JSON.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"amp", "channels_last", "speed_probe", "out_dir", "resume", "progress", "threads", "device"}


def _run(folder: Path) -> dict:
    cfg = json.loads((folder / "config.json").read_text())
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    metric = cfg.get("metric") or ("miou" if "miou" in json.dumps(records[-1].get("val", {})) else "top1")
    return {"folder": str(folder), "amp": cfg["amp"], "channels_last": cfg["channels_last"], "config": cfg,
            "metric": metric, "curve": {r["epoch"]: r["val"][metric] for r in records if "val" in r},
            "train_s_per_epoch": sum(r["epoch_time_s"] for r in records) / len(records), "epochs": len(records)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="FP32 run, bf16 run, [FP32 run, bf16 run, ...]")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_parity.json"))
    args = p.parse_args()
    if len(args.folders) % 2:
        raise SystemExit("give run folders in pairs: FP32 run, bf16 run")
    from slimcv._console import print_table

    pairs, rows = [], []
    for a, b in zip(args.folders[::2], args.folders[1::2]):
        ra, rb = _run(Path(a)), _run(Path(b))
        same = {k: v for k, v in ra["config"].items() if k not in SETTINGS}
        other = {k: v for k, v in rb["config"].items() if k not in SETTINGS}
        for cfg in (same, other):
            cfg.get("data", {}).pop("workers", None)
            cfg.get("data", {}).pop("cache", None)
        if same != other:
            diff = sorted(k for k in set(same) | set(other) if same.get(k) != other.get(k))
            raise SystemExit(f"{a} and {b} differ in {diff}, not only in precision")
        pairs.append({"fp32": {k: v for k, v in ra.items() if k != "config"},
                      "bf16": {k: v for k, v in rb.items() if k != "config"},
                      "model": ra["config"]["model"], "data": ra["config"]["data"]["spec"]})
        for epoch in sorted(set(ra["curve"]) & set(rb["curve"])):
            rows.append((Path(a).name, epoch, ra["curve"][epoch], rb["curve"][epoch],
                         rb["curve"][epoch] - ra["curve"][epoch]))
    Path(args.out).write_text(json.dumps({"pairs": pairs}, indent=2) + "\n")
    print_table("Validation metric, FP32 vs bf16 training", ["run", "epoch", "FP32", "bf16", "bf16 - FP32"], rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
