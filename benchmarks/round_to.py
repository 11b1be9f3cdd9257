"""Does rounding pruned channel counts to multiples of 4, 8 or 16 make them faster? One interleaved run.

    python benchmarks/round_to.py [--ratio 0.45] [--runs 30]   # -> benchmarks/results/round_to.json

The CamVid teacher's architecture (U-Net width 16, depth 4, untrained: latency does not depend on the weights)
is pruned layer-uniformly at the same ratio with round_to 1, 4, 8 and 16, exported at 176x240, and timed at
batch 1 with one thread in ONNX Runtime and OpenVINO.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ratio", type=float, default=0.45)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "round_to.json"))
    args = p.parse_args()
    import torch

    from slimcv._console import print_table
    from slimcv.bench.latency import time_interleaved
    from slimcv.bench.macs import count_macs
    from slimcv.config import ExportConfig
    from slimcv.deploy.deployed import deployed_runner
    from slimcv.deploy.runtimes import available
    from slimcv.export.onnx import to_onnx
    from slimcv.hardware import cpu_features
    from slimcv.models import create_model
    from slimcv.prune.structured import prune_structured

    torch.set_num_threads(1)
    example = torch.randn(1, 3, 176, 240)
    runtimes = [r for r in ("ort", "openvino") if r in {x.name for x in available()}]
    runners, info = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in (1, 4, 8, 16):
            torch.manual_seed(0)
            net = create_model("unet", 11, base_width=16, depth=4).eval()
            prune_structured(net, example, ratio=args.ratio, num_classes=11, round_to=r)
            path = Path(tmp) / f"round{r}.onnx"
            to_onnx(net, example, path, ExportConfig(batch=1), dynamic_hw=False)
            info[r] = {"macs": count_macs(net, tuple(example.shape)),
                       "widths": sorted({m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)})}
            for rt in runtimes:
                runners[f"{r}/{rt}"] = deployed_runner(path, example, rt, 1)
        t = time_interleaved(runners, runs=args.runs, threads=1)
    rows, out = [], {"cpu": cpu_features(), "ratio": args.ratio, "rows": []}
    for r in info:
        for rt in runtimes:
            ms = t[f"{r}/{rt}"].median_ms
            out["rows"].append({"round_to": r, "runtime": rt, "median_ms": ms, **info[r]})
            rows.append((r, rt, info[r]["macs"] / 1e6, ms, " ".join(map(str, info[r]["widths"]))))
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print_table(f"pruned at ratio {args.ratio}, batch 1, 1 thread", ["round_to", "runtime", "MMACs", "ms",
                "conv widths"], rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
