"""Compress a trained teacher to a latency budget with the measured search, beside the peer a CPU user would pick
(NNCF INT8 of the teacher in OpenVINO), and print where each lands against the teacher in ORT FP32.

    python benchmarks/compress_budget.py --teacher runs/bench/camvid_teacher_fast --target-speedup 6 \\
        --budget-minutes 40 [--no-peer] [--out benchmarks/results/compress_budget_camvid.json]

The search times every candidate untrained in one interleaved run (reference: the teacher in ONNX Runtime
FP32), distils those within the budget and keeps the most accurate (slimcv.pipeline.budget). The peer is
quantized by `slimcv quantize` (NNCF, MinMax) and timed there against the same teacher in ORT FP32, so each
speed-up is a ratio within one measurement.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True)
    p.add_argument("--data", help="dataset spec (default: the teacher's own data settings)")
    p.add_argument("--target-speedup", type=float, default=6.0)
    p.add_argument("--budget-minutes", type=float, default=40.0)
    p.add_argument("--max-drop", type=float, help="points the chosen model may lose (default: no limit)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runtimes", nargs="+", help="runtimes the search times (default: ONNX Runtime and OpenVINO); "
                   "e.g. ort openvino-f32 to leave out OpenVINO's bf16 where ONEDNN_MAX_CPU_ISA emulates an older CPU")
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--out-dir", default="runs/bench/compress_budget")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compress_budget_camvid.json"))
    args = p.parse_args()
    import os

    import torch

    from slimcv._console import print_table
    from slimcv.artifact import read_summary, run_data_config
    from slimcv.config import SearchSpace
    from slimcv.hardware import cpu_features
    from slimcv.pipeline.budget import compress_to_budget

    torch.set_num_threads(args.threads)
    data = run_data_config(args.teacher, args.data)
    out: dict = {"cpu": cpu_features(), "threads": args.threads, "teacher": args.teacher,
                 "target_speedup": args.target_speedup, "budget_minutes": args.budget_minutes,
                 "max_drop": args.max_drop, "runtimes": args.runtimes,
                 "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA")}
    t = time.perf_counter()
    r = compress_to_budget(args.teacher, data, target_speedup=args.target_speedup,
                           budget_minutes=args.budget_minutes, out_dir=args.out_dir, threads=args.threads,
                           max_drop=args.max_drop,
                           space=SearchSpace(runtimes=tuple(args.runtimes)) if args.runtimes else None)
    out["search"] = json.loads((Path(args.out_dir) / "compress_search.json").read_text())
    out["search_minutes"] = (time.perf_counter() - t) / 60
    key = out["search"]["metric"]
    rows = []
    if r.winner is not None:
        rows.append(("slimcv search: " + r.winner.name, r.winner.label, r.winner.latency_ms, r.winner.speedup,
                     r.winner.metric, r.winner.metric - r.source_metric))
    if not args.no_peer:
        import slimcv

        q = slimcv.quantize(args.teacher, data=data, out_dir=str(Path(args.out_dir) / "peer_int8"),
                            calibration=["minmax"], latency_runs=20, threads=args.threads, progress=False)
        models = {m["name"]: m for m in q.models}
        ref = next((m for m in q.models if m.get("runtime") == "ort" and m["name"] == "fp32"), None)
        peer = next((m for m in q.models if "nncf" in m["name"] and m.get("runtime") == "openvino"), None)
        out["peer"] = {"models": q.models, "recommendation": q.recommendation}
        if ref and peer:
            teacher_metric = (read_summary(args.teacher) or {}).get("metrics", {}).get(key)
            ms, ref_ms = peer["latency_ms"]["median"], ref["latency_ms"]["median"]
            rows.append(("peer: NNCF INT8 teacher", "openvino", ms, ref_ms / ms, peer["metrics"][key],
                         peer["metrics"][key] - (teacher_metric or ref["metrics"][key])))
        out["peer_names"] = sorted(models)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str) + "\n")
    print_table(f"against the teacher in ORT FP32 (target {args.target_speedup:g}x)",
                ["model", "runtime", "ms", "speed-up", key, "vs teacher"], rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
