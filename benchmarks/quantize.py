"""INT8 benchmark: FP32 vs static PTQ (each calibration method) vs QAT vs dynamic, evaluated as deployed.

    python benchmarks/quantize.py --quick            # minutes: fewer calibration images, QAT on a train subset
    python benchmarks/quantize.py                    # full: 64 calibration images, 2 QAT epochs on all of train

Models: the CIFAR-10 ResNet-20 teacher and the CamVid U-Net teacher and student (runs/bench/*, made by
train_teachers.py and distill_camvid.py). Each goes through ``slimcv.quantize``: accuracy/mIoU on the whole
validation split in ONNX Runtime, file sizes, batch-1 latency of eager PyTorch / ORT FP32 / ORT INT8 timed
interleaved. Then the ORT FP32 efficiency of one conv net (the CamVid teacher at 360x480): achieved GFLOP/s
against ORT's own float32 matrix multiply (2048^3) timed interleaved with it on the same machine. JSON goes to
benchmarks/results/quantize.json after every model.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

import slimcv
from slimcv.data import load_data
from slimcv.hardware import cpu_features
from slimcv.artifact import run_data_config

HERE = Path(__file__).parent
MODELS = {
    "cifar10_resnet20": "runs/bench/cifar10_teacher",
    "camvid_teacher": "runs/bench/camvid_teacher",
    "camvid_student": "runs/bench/camvid_student_alone",
}
QUICK_TRAIN_SUBSET = {"cifar10_resnet20": 4000, "camvid_teacher": 96, "camvid_student": 96}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--qat-epochs", type=int, help="default: 1 quick, 2 full")
    p.add_argument("--efficiency-only", action="store_true", help="only the ORT FP32 GFLOP/s measurement")
    p.add_argument("--out", default=str(HERE / "results" / "quantize.json"))
    args = p.parse_args()
    out = Path(args.out)
    results: dict = {"variant": "quick" if args.quick else "full", "threads": args.threads, "cpu": cpu_features(),
                     "torch": torch.__version__, "python": platform.python_version(), "models": {}}
    import onnxruntime

    results["onnxruntime"] = onnxruntime.__version__
    old = json.loads(out.read_text()) if out.is_file() else {}
    if old.get("variant") == results["variant"]:  # keep the models not re-run this time
        results["models"] = {**old.get("models", {}), **results["models"]}
        results["efficiency"] = old.get("efficiency")
    if args.efficiency_only:
        args.models = []
    for name in args.models:
        start = time.perf_counter()
        results["models"][name] = run_model(name, args)
        results["models"][name]["wall_s"] = time.perf_counter() - start
        _write(out, results)
    results["efficiency"] = ort_efficiency(MODELS["camvid_teacher"], args.threads)
    _write(out, results)
    print(json.dumps(results["efficiency"], indent=2))
    print(f"-> {out}")


def run_model(name: str, args) -> dict:
    """slimcv.quantize on one trained run; a compact summary beside the full quantize.json records."""
    run = Path(MODELS[name])
    data = run_data_config(run)
    qat_epochs = args.qat_epochs if args.qat_epochs is not None else (1 if args.quick else 2)
    bundle = load_data(data)
    if args.quick:  # QAT fine-tunes on this many training images, spread over the split (CIFAR is sorted by class)
        n, total = QUICK_TRAIN_SUBSET[name], len(bundle.train)
        bundle = dataclasses.replace(bundle, train=Subset(bundle.train, range(0, total, total // n)[:n]))
    r = slimcv.quantize({"source": str(run), "data": data, "calibration": ["minmax", "entropy", "percentile"],
                         "calibration_images": 32 if args.quick else 64, "dynamic": True, "qat_epochs": qat_epochs,
                         "threads": args.threads, "latency_runs": 30, "max_drop": 0.5, "progress": False,
                         "out_dir": f"runs/bench/quantize_{name}"}, data=bundle)
    key = "miou" if "miou" in r.models[0]["metrics"] else "top1"
    by = {m["name"]: m for m in r.models}
    fp32, eager = by["fp32"], by.get("fp32_pytorch")
    rows = {}
    for m in r.models:
        rows[m["name"]] = {
            key: m["metrics"][key], "drop_pt": fp32["metrics"][key] - m["metrics"][key], "runtime": m["runtime"],
            "file_bytes": m["file_bytes"], "size_ratio_vs_fp32": fp32["file_bytes"] / m["file_bytes"],
            "latency_ms": m["latency_ms"],
            "speedup_vs_ort_fp32": fp32["latency_ms"]["median"] / m["latency_ms"]["median"],
            "speedup_vs_eager": (eager["latency_ms"]["median"] / m["latency_ms"]["median"]) if eager else None,
            "per_class": m["metrics"].get("per_class_iou") or m["metrics"].get("per_class_acc")}
    int8 = [v for k, v in rows.items() if k.startswith("int8")]
    best = min(int8, key=lambda v: v["drop_pt"]) if int8 else None
    print(f"{name}: recommended {r.recommendation['name']}; best INT8 drop {best['drop_pt']:.2f} pt" if best else name)
    return {"metric": key, "qat_epochs": qat_epochs, "qat_train_images": len(bundle.train), "models": rows,
            "best_int8_drop_pt": best["drop_pt"] if best else None, "recommendation": r.recommendation,
            "notes": r.notes, "folder": str(r.out_dir)}


def ort_efficiency(run: str, threads: int, size: tuple[int, int] = (360, 480)) -> dict:
    """GFLOP/s of ORT FP32 on a conv net vs ORT's own float32 GEMM (2048^3), timed interleaved with it."""
    import tempfile

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from slimcv.bench.latency import eager_runner, ort_runner, time_interleaved
    from slimcv.bench.macs import count_macs
    from slimcv.deploy.runtimes import ort_session
    from slimcv.artifact import load_run_model

    net, _ = load_run_model(run)
    net.eval()
    x = torch.randn(1, 3, *size)
    macs = count_macs(net, tuple(x.shape))
    n = 2048
    rng = np.random.default_rng(0)
    gemm = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
        [numpy_helper.from_array(rng.standard_normal((n, n), dtype=np.float32), "b")]),
        opset_imports=[helper.make_opsetid("", 17)])
    with tempfile.TemporaryDirectory() as tmp:
        path = slimcv.export(net, Path(tmp) / "m.onnx", data=None, size=size, samples=1).path
        onnx.save(gemm, Path(tmp) / "gemm.onnx")
        a = rng.standard_normal((n, n), dtype=np.float32)
        gemm_session = ort_session(Path(tmp) / "gemm.onnx", threads)  # the one factory: spinning off
        t = time_interleaved({"ort_fp32": ort_runner(ort_session(path, threads), x),
                              "eager": eager_runner(net, x), "ort_sgemm": ort_runner(gemm_session, a)},
                             warmup=3, runs=20, threads=threads)
    gflop = 2 * macs / 1e9
    peak = 2 * n**3 / 1e9 / (t["ort_sgemm"].min_ms / 1e3)
    ort = gflop / (t["ort_fp32"].min_ms / 1e3)
    return {"model": run, "input": list(x.shape), "gflop": gflop, "threads": threads,
            "ort_fp32_ms": t["ort_fp32"].to_dict(), "eager_ms": t["eager"].to_dict(),
            "ort_sgemm_ms": t["ort_sgemm"].to_dict(), "ort_fp32_gflops": ort,
            "eager_gflops": gflop / (t["eager"].min_ms / 1e3), "ort_sgemm_gflops": peak,
            "ort_fp32_vs_sgemm": ort / peak,
            "note": "best of 20 interleaved runs on a shared machine; ORT's own 2048^3 float32 MatMul is the peak"}


def _write(out: Path, results: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
