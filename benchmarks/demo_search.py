"""The demo's compress stage on its teacher, with every runtime of this machine and again as on an older CPU, by
default one with AVX2 only (oneDNN capped by ONEDNN_MAX_CPU_ISA: with AVX2, OpenVINO has no bf16, VNNI or AMX
kernels; it is held to FP32 for FP32 files and runs INT8 files through its AVX2 kernels): does the demo's promise
(1.6x the teacher in ONNX Runtime FP32 within 2 mIoU) hold where the runtime cannot help?

    python benchmarks/demo_search.py --teacher runs/demo/teacher [--repeats 2] [--only every|capped] \
        [--isa AVX2|AVX512_CORE_VNNI]

The teacher is the demo's (trained here when --teacher is not given). Each search uses the demo's settings
(``slimcv.pipeline.demo``): its space, budget and finalists. The capped search runs in a child process started
with ONEDNN_MAX_CPU_ISA=ISA (oneDNN reads it once, at load). ONNX Runtime's own kernels ignore the cap, so the
reference keeps this CPU's FP32 speed: on a real AVX2-only CPU it is slower, which favours every other runtime.
Printed: one row per search; written: benchmarks/results/demo_search.json with the CPU's flags.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
CAPPED = {"runtimes": ["ort", "openvino-f32"]}  # OpenVINO's default bf16 does not run with oneDNN capped below it
ISA = "ONEDNN_MAX_CPU_ISA"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default=None, help="the demo's teacher folder (default: train one)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--only", choices=["every", "capped"], help="one of the two searches (default: both)")
    p.add_argument("--isa", default="AVX2", help="oneDNN's cap for the second search (ONEDNN_MAX_CPU_ISA)")
    p.add_argument("--out", default="runs/bench/demo_search")
    p.add_argument("--json", default=str(HERE / "results" / "demo_search.json"))
    args = p.parse_args()
    from demo_kd import demo_teacher  # this folder: the demo's teacher, trained the same way

    teacher, stamp = demo_teacher(args.teacher, args.out), time.strftime("%Y%m%d-%H%M%S")
    rows = []
    capped = os.environ.get(ISA) == args.isa
    kind = f"{args.isa} only (emulated)"
    for i in range(args.repeats):
        if args.only in (None, "every") and not capped:
            rows.append(_search("every runtime", {}, teacher, Path(args.out) / stamp / f"all_{i}", i))
        if args.only in (None, "capped"):  # in a child process unless oneDNN is already capped in this one
            rows.append(_search(kind, CAPPED, teacher, Path(args.out) / stamp / f"{args.isa.lower()}_{i}", i)
                        if capped else _in_child(teacher, Path(args.out) / stamp, i, args.isa))
    from slimcv._console import print_table
    from slimcv.hardware import cpu_features

    print_table("the demo's search", ["search", "#", "met", "chosen", "runtime", "x ORT FP32", "mIoU change", "s"],
                [(r["search"], r["repeat"], r["met"], r["chosen"], r["runtime"], r["speedup"], r["change"],
                  r["seconds"]) for r in rows])
    from slimcv.pipeline.demo import demo_recipe

    settings = next(s for s in demo_recipe()["stages"] if s["name"] == "compress")
    Path(args.json).write_text(json.dumps({"cpu": cpu_features(), "teacher": teacher, "settings": settings,
                                           "rows": rows}, indent=1))


def _in_child(teacher: str, out: Path, i: int, isa: str) -> dict:
    """The capped search of repeat ``i`` in a child process with oneDNN capped at ``isa``; its row (one saying what
    failed, if the child did, so the rows measured before it are still written)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "row.json"
        done = subprocess.run([sys.executable, __file__, "--teacher", teacher, "--only", "capped", "--isa", isa,
                               "--out", str(out.parent), "--json", str(result)], env={**os.environ, ISA: isa})
        if done.returncode != 0 or not result.is_file():
            return {"search": f"{isa} only (emulated)", "repeat": i, "met": None, "chosen": None, "runtime": None,
                    "speedup": None, "change": None, "seconds": None, "error": f"exit status {done.returncode}"}
        row = json.loads(result.read_text())["rows"][0]
    return {**row, "repeat": i}


def _search(kind: str, space: dict, teacher: str, out: Path, i: int) -> dict:
    """One search with the demo's settings and ``space`` on top, in a new folder; its row."""
    import torch

    torch.set_num_threads(1)
    import slimcv
    from slimcv.pipeline.demo import demo_recipe

    recipe = demo_recipe()
    stages = {s["name"]: s for s in recipe["stages"]}
    settings = {k: v for k, v in stages["compress"].items() if k not in ("name", "input", "type")}
    cfg = {**settings, "space": {**settings.get("space", {}), **space}, "out_dir": str(out)}
    start = time.perf_counter()
    r = slimcv.compress(teacher, recipe["data"], **cfg)
    c = r.search.closest
    row = {"search": kind, "repeat": i, "onednn_max_cpu_isa": os.environ.get(ISA), "space": cfg["space"],
           "met": r.search.met, "chosen": c.name if c else None, "runtime": c.label if c else None,
           "speedup": c.speedup if c else None,
           "change": (c.metric - r.search.source_metric
                      if c and c.metric is not None and r.search.source_metric is not None else None),
           "seconds": time.perf_counter() - start, "phases_seconds": r.search.phases,
           "sentence": json.loads((out / "compress.json").read_text())["outcome"]["sentence"]}
    print(row["sentence"])
    return row


if __name__ == "__main__":
    main()
