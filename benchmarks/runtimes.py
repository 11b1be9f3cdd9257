"""Every runtime x precision of the runtime table on trained models, with accuracy as deployed.

    python benchmarks/runtimes.py --camvid-teacher runs/bench/camvid_teacher \\
        --camvid-student runs/bench/camvid_student --cifar runs/bench/cifar10_teacher

For each model, `slimcv quantize` builds the FP32 ONNX file, static INT8 QDQ files (MinMax, entropy,
percentile; 64 calibration images) and, where OpenVINO and NNCF are installed, NNCF's OpenVINO INT8 with its
defaults (the peer a CPU user would pick). It scores every file in every runtime that runs it on the
validation split and times them all interleaved at batch 1 (one thread). `slimcv bench` then times the same
rows again, interleaved, at batch 1 and 8, in a second, independent run. Printed: one table per model; written:
benchmarks/results/runtimes.json. Targets checked:

- the chosen deployment is never slower than the fastest configuration within the accuracy budget, in the
  independent bench run (10% allowed for timing noise);
- INT8 costs at most 0.3 mIoU / top-1 points (the best INT8 row);
- on the CamVid teacher, where the CPU has VNNI, the chosen model is at least 2x faster than ORT FP32.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def measure(name: str, run: Path, out: Path, threads: int, runs: int) -> dict[str, Any]:
    import slimcv
    from slimcv.deploy import runtimes

    start = time.perf_counter()
    q = slimcv.quantize(str(run), out_dir=str(out / name), calibration=["minmax", "entropy", "percentile"],
                        calibration_images=64, threads=threads, latency_runs=runs, progress=False)
    quantize_s = time.perf_counter() - start
    key = "miou" if "miou" in q.models[0]["metrics"] else "top1"
    report = slimcv.bench([str(run), str(out / name)], runtimes=[r.name for r in runtimes.available()],
                          batch_sizes=[1, 8], runs=runs, threads=threads, memory=False, quiet=True)
    again = {}  # (file name or "eager", runtime row label) -> the bench run's figures
    for m in report.models:
        for r in m.runtimes:
            again[(Path(m.source).name if m.kind == "onnx" else "eager", r.runtime)] = {
                "median": r.latency_ms.median, "p90": r.latency_ms.p90, "images_per_s_b8": r.throughput.get("8")}
    rows = []
    for m in q.models:
        label = runtimes.row_name(m["runtime"], m["precision"] or "fp32")
        module = runtimes.get(m["runtime"]).runs == "module"
        b = again.get(("eager" if module else Path(m["path"]).name, label), {})
        rows.append({"name": m["name"], "runtime": m["runtime"], "precision": m["precision"],
                     "computes_in": runtimes.computes_in(m["runtime"], m["precision"]),
                     "metric": m["metrics"][key], "latency_ms": m["latency_ms"], "bench_latency_ms": b.get("median"),
                     "bench_p90_ms": b.get("p90"), "images_per_s_b8": b.get("images_per_s_b8"),
                     "file_bytes": m["file_bytes"]})
    return {"metric": key, "rows": rows, "recommendation": q.recommendation, "max_drop": 0.5,
            "quantize_s": round(quantize_s, 1), "notes": q.notes}


def check(name: str, result: dict[str, Any], vnni: bool) -> dict[str, Any]:
    rows = {r["name"]: r for r in result["rows"]}
    chosen = rows[result["recommendation"]["name"]]
    ref = max(r["metric"] for r in result["rows"] if r["precision"] == "fp32")
    eligible = [r for r in result["rows"] if r["metric"] >= ref - result["max_drop"] and r["bench_latency_ms"]]
    fastest = min(eligible, key=lambda r: r["bench_latency_ms"]) if eligible else None
    int8 = [r for r in result["rows"] if r["precision"] == "int8"]
    best_int8 = max(int8, key=lambda r: r["metric"]) if int8 else None
    out: dict[str, Any] = {
        "chosen": chosen["name"], "fastest_in_budget": fastest and fastest["name"],
        "chosen_vs_fastest": (chosen["bench_latency_ms"] / fastest["bench_latency_ms"])
        if fastest and chosen["bench_latency_ms"] else None,
        "int8_cost_points": (ref - best_int8["metric"]) if best_int8 else None,
    }
    out["never_slower_met"] = out["chosen_vs_fastest"] is not None and out["chosen_vs_fastest"] <= 1.10
    out["int8_cost_met"] = out["int8_cost_points"] is not None and out["int8_cost_points"] <= 0.3
    ort_fp32 = rows.get("fp32")
    if name == "camvid_teacher" and ort_fp32 and chosen["bench_latency_ms"]:
        out["speedup_vs_ort_fp32"] = ort_fp32["bench_latency_ms"] / chosen["bench_latency_ms"]
        out["speedup_met"] = out["speedup_vs_ort_fp32"] >= 2.0 if vnni else None
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--camvid-teacher")
    p.add_argument("--camvid-student")
    p.add_argument("--cifar", help="the CIFAR-10 ResNet-20 run folder")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=30, help="timed calls per row")
    p.add_argument("--work", default="runs/bench/runtimes", help="where the quantize folders go")
    p.add_argument("--out", default=str(HERE / "results" / "runtimes.json"))
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from slimcv._console import print_table
    from slimcv.deploy.runtimes import unavailable
    from slimcv.hardware import cpu_flags
    from slimcv.hardware import cpu_features

    cpu = cpu_features()
    flags = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",
                                  "amx_bf16"})
    results: dict[str, Any] = {"cpu": cpu, "cpu_flags": flags, "threads": args.threads, "unavailable": unavailable(),
                               "models": {}}
    for name, run in (("camvid_teacher", args.camvid_teacher), ("camvid_student", args.camvid_student),
                      ("cifar_resnet20", args.cifar)):
        if not run:
            continue
        r = measure(name, Path(run), Path(args.work), args.threads, args.runs)
        r["targets"] = check(name, r, bool(cpu.get("vnni")))
        results["models"][name] = r
        print_table(f"{name} ({r['metric']}; {', '.join(flags)}; {args.threads} thread)",
                    ["row", "computes in", r["metric"], "ms (quantize run)", "ms (bench run)", "p90", "img/s b8",
                     "KiB"],
                    [(x["name"], x["computes_in"], x["metric"], x["latency_ms"]["median"], x["bench_latency_ms"],
                      x["bench_p90_ms"], x["images_per_s_b8"], x["file_bytes"] / 1024) for x in r["rows"]])
        print(f"{name}: chosen {r['recommendation']['name']} ({r['recommendation']['why']}); targets {r['targets']}")
        Path(args.out).parent.mkdir(exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
