"""Compressing a detector on this CPU: structured pruning with KD against Torch-Pruning's plain recipe, INT8 as
deployed (NNCF for OpenVINO, ORT QDQ), and the latency-budget search against NNCF INT8 of the teacher.

    python benchmarks/detection_compress.py --teacher runs/bench/detection_kd/synthetic_teacher

The teacher is a slimcv detection run (default: the slimdet_m that benchmarks/detection_kd.py trains on
synthetic-shapes:detection at 128x128). Phases, one thread, each on the same validation split:
1. prune: `slimcv.prune` to half the MACs (layer-uniform L1, round_to 8) then fine-tuned with KD from the unpruned
   detector (neck + head), against Torch-Pruning's plain recipe: the same uniform L1 pruning to the same MACs,
   fine-tuned for the same epochs on the detector's own losses. Each timed against the teacher in ORT FP32 and
   OpenVINO, interleaved (`slimcv bench`).
2. int8: `slimcv quantize` of the teacher: mAP of each file as deployed, file size against FP32.
3. search: `slimcv compress --target-speedup 2 --max-drop 1` with the given budget, beside NNCF INT8 of the
   teacher (the peer a CPU user would pick).
4. plain: Torch-Pruning's plain recipe (uniform L1) at the search winner's MACs, fine-tuned for as many epochs as
   the winner trained, on the detector's own losses; timed with the teacher and the winner.
5. iterative (not in the default phases): one pruning step with --epochs of KD fine-tuning against two steps
   with half of them each.
Written: benchmarks/results/detection_compress.json with the CPU's flags.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
DATA = {"spec": "synthetic-shapes:detection", "options": {"size": 128}, "batch_size": 16}
OPTIM = {"name": "adamw", "lr": 0.001, "weight_decay": 0.05}


def prune_phase(teacher: str, out: Path, epochs: int, threads: int) -> dict[str, Any]:
    import slimcv

    common = dict(data=DATA, remove=0.5, target="macs", finetune_epochs=epochs, round_to=8, importance="l1",
                  optim=OPTIM, progress=False, latency_runs=0, threads=threads)
    rows = {}
    for name, extra in (("slimcv_kd", {"distill": [{"name": "kd"}]}), ("plain_l1", {})):
        start = time.perf_counter()
        r = slimcv.prune(teacher, out_dir=str(out / f"prune_{name}"), **common, **extra)
        rows[name] = {"map": r.after["map"], "macs": r.after["macs"], "params": r.after["params"],
                      "teacher_map": r.before["map"], "teacher_macs": r.before["macs"],
                      "seconds": round(time.perf_counter() - start, 1)}
        print(name, json.dumps(rows[name]), flush=True)
    report = slimcv.bench([teacher, str(out / "prune_slimcv_kd"), str(out / "prune_plain_l1")],
                          runtimes=["ort", "openvino"], batch_sizes=[1], runs=30, threads=threads, memory=False,
                          quiet=True)
    times = {m.name: {r.runtime: r.latency_ms.median for r in m.runtimes} for m in report.models}
    for m, (name, row) in zip(report.models[1:], rows.items()):
        row["latency_ms"] = times[m.name]
        row["speedup"] = {rt: times[report.models[0].name][rt] / ms for rt, ms in times[m.name].items()
                          if rt in times[report.models[0].name]}
    return {"teacher_latency_ms": times[report.models[0].name], **rows}


def int8_phase(teacher: str, out: Path, threads: int) -> dict[str, Any]:
    import slimcv

    q = slimcv.quantize(teacher, data=DATA, out_dir=str(out / "int8"), nncf=True, threads=threads, progress=False)
    rows = {m["name"]: {"map": m["metrics"]["map"], "bytes": m.get("file_bytes"),
                        "latency_ms": (m.get("latency_ms") or {}).get("median")}
            for m in q.models}
    print(json.dumps(rows), flush=True)
    return rows


def search_phase(teacher: str, out: Path, minutes: float, threads: int) -> dict[str, Any]:
    import slimcv

    start = time.perf_counter()
    r = slimcv.compress(teacher, data=DATA, target_speedup=2.0, max_drop=1.0, budget_minutes=minutes,
                        out_dir=str(out / "search"), threads=threads, progress=False)
    return {"met": r.met, "sentence": r.sentence, "seconds": round(time.perf_counter() - start, 1),
            "table": r.table}


def plain_phase(teacher: str, out: Path, search: dict[str, Any], threads: int) -> dict[str, Any]:
    """Torch-Pruning's plain recipe at the search winner's MACs, fine-tuned for as many epochs as the winner trained
    (its proxy and later runs), on the detector's own losses, timed interleaved with the teacher."""
    import slimcv

    winner = next(r for r in search["table"] if r["meets"] and r["kind"] != "source"
                  and any(n.startswith("final") for n in r["notes"]))
    log = json.loads((out / "search" / "compress_search.json").read_text())["log"]
    epochs = sum(e["epochs"] for e in log if e["candidate"] == winner["candidate"] and "epochs" in e)
    teacher_macs = next(r["macs"] for r in search["table"] if r["kind"] == "source")
    start = time.perf_counter()
    r = slimcv.prune(teacher, data=DATA, remove=1 - winner["macs"] / teacher_macs, target="macs",
                     finetune_epochs=epochs, round_to=8, importance="l1", optim=OPTIM, progress=False,
                     latency_runs=0, threads=threads, out_dir=str(out / "plain_at_winner"))
    report = slimcv.bench([teacher, str(out / "plain_at_winner"), winner_folder(out)], runtimes=["ort", "openvino"],
                          batch_sizes=[1], runs=30, threads=threads, memory=False, quiet=True)
    times = [{rt.runtime: rt.latency_ms.median for rt in m.runtimes} for m in report.models]
    row = {"winner": winner["candidate"], "epochs": epochs, "map": r.after["map"], "macs": r.after["macs"],
           "winner_macs": winner["macs"], "winner_map": winner["metric"], "seconds": round(time.perf_counter() - start),
           "latency_ms": {"teacher": times[0], "plain": times[1], "winner": times[2]}}
    print(json.dumps(row), flush=True)
    return row


def iterative_phase(teacher: str, out: Path, epochs: int, threads: int) -> list[dict[str, Any]]:
    """One pruning step with ``epochs`` of KD fine-tuning against two steps with half of them each, to half the
    MACs."""
    import slimcv

    rows = []
    for steps in (1, 2):
        start = time.perf_counter()
        r = slimcv.prune(teacher, data=DATA, remove=0.5, target="macs", steps=steps, finetune_epochs=epochs // steps,
                         round_to=8, distill=[{"name": "kd"}], optim=OPTIM, progress=False, latency_runs=0,
                         threads=threads, out_dir=str(out / f"iterative_{steps}"))
        rows.append({"steps": steps, "epochs_per_step": epochs // steps, "map": r.after["map"],
                     "macs": r.after["macs"], "teacher_map": r.before["map"],
                     "seconds": round(time.perf_counter() - start)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def winner_folder(out: Path) -> str:
    return json.loads((out / "search" / "compress.json").read_text())["outcome"]["folder"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="runs/bench/detection_kd/synthetic_teacher")
    p.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs after pruning")
    p.add_argument("--budget-minutes", type=float, default=20.0)
    p.add_argument("--phases", nargs="+", default=["prune", "int8", "search", "plain"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/bench/detection_compress")
    p.add_argument("--json", default=str(HERE / "results" / "detection_compress.json"))
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from slimcv.hardware import cpu_features

    out = Path(args.out)
    path = Path(args.json)
    record = json.loads(path.read_text()) if path.is_file() else {}
    record.update(cpu=cpu_features(), threads=args.threads, teacher=args.teacher, data=DATA)
    for phase in args.phases:
        if phase == "prune":
            record["prune"] = prune_phase(args.teacher, out, args.epochs, args.threads)
        elif phase == "int8":
            record["int8"] = int8_phase(args.teacher, out, args.threads)
        elif phase == "search":
            record["search"] = search_phase(args.teacher, out, args.budget_minutes, args.threads)
        elif phase == "iterative":
            record["iterative"] = iterative_phase(args.teacher, out, args.epochs, args.threads)
        elif phase == "plain":
            record["plain_at_winner"] = plain_phase(args.teacher, out, record["search"], args.threads)
        path.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "search"}, indent=1, default=str))
    if "search" in record:
        print(record["search"]["sentence"])


if __name__ == "__main__":
    main()
