"""The demo's compress stage on its teacher, with every runtime of this machine and again with only the kernels a
CPU without bf16 or INT8 dot-product instructions has (ONNX Runtime FP32 and OpenVINO forced to FP32, no INT8):
does the demo's promise (2x the teacher in ONNX Runtime FP32 within 2 mIoU) hold where the runtime cannot help?

    python benchmarks/demo_search.py --teacher runs/demo/teacher [--repeats 2]

The teacher is the demo's (trained here when --teacher is not given). Each search uses the demo's settings
(``slimcv.pipeline.demo``): its space, budget and finalists. Printed: one row per search; written:
benchmarks/results/demo_search.json with the CPU's flags.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).parent
PLAIN = {"runtimes": ["ort", "openvino-f32"], "int8": []}  # what an AVX2-only CPU gets from its runtimes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default=None, help="the demo's teacher folder (default: train one)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", default="runs/bench/demo_search")
    p.add_argument("--json", default=str(HERE / "results" / "demo_search.json"))
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    import slimcv
    from slimcv._console import print_table
    from slimcv.hardware import cpu_features
    from slimcv.pipeline.demo import demo_recipe

    from demo_kd import demo_teacher  # this folder: the demo's teacher, trained the same way

    recipe = demo_recipe()
    stages = {s["name"]: s for s in recipe["stages"]}
    data, teacher = recipe["data"], demo_teacher(args.teacher, args.out)
    settings = {k: v for k, v in stages["compress"].items() if k not in ("name", "input", "type")}
    rows, stamp = [], time.strftime("%Y%m%d-%H%M%S")
    for i in range(args.repeats):
        for kind, space in (("every runtime", {}), ("FP32 kernels only", PLAIN)):
            out = Path(args.out) / stamp / f"{'all' if not space else 'fp32'}_{i}"  # a new search, not a resumed one
            cfg = {**settings, "space": {**settings.get("space", {}), **space}, "out_dir": str(out)}
            start = time.perf_counter()
            r = slimcv.compress(teacher, data, **cfg)
            c = r.search.closest
            rows.append({"search": kind, "repeat": i, "met": r.search.met, "chosen": c.name if c else None,
                         "runtime": c.label if c else None, "speedup": c.speedup if c else None,
                         "change": (c.metric - r.search.source_metric
                                    if c and c.metric is not None and r.search.source_metric is not None else None),
                         "seconds": time.perf_counter() - start, "phases_seconds": r.search.phases,
                         "sentence": json.loads((out / "compress.json").read_text())["outcome"]["sentence"]})
            print(rows[-1]["sentence"])
    print_table("the demo's search", ["search", "#", "met", "chosen", "runtime", "x ORT FP32", "mIoU change", "s"],
                [(r["search"], r["repeat"], r["met"], r["chosen"], r["runtime"], r["speedup"], r["change"],
                  r["seconds"]) for r in rows])
    Path(args.json).write_text(json.dumps({"cpu": cpu_features(), "teacher": teacher, "settings": settings,
                                           "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
