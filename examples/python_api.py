"""slimcv from Python: every stage is a plain function; chain them by passing run folders.

    python examples/python_api.py                 # about 2 minutes on 2 CPU cores
    python examples/python_api.py --quick         # tiny images and one epoch each: a smoke test

The same chain written as a recipe (resumable, re-runs only what changed) is at the end.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import slimcv


def main(out: Path, quick: bool) -> None:
    data = {"spec": "synthetic-shapes", "batch_size": 16, "workers": 0,
            **({"options": {"size": 32, "length": 48}, "val_subset": 16} if quick else {})}
    epochs = 1 if quick else 8
    quiet = {"progress": False, "tensorboard": False}

    # 1. a teacher, trained from scratch
    teacher = slimcv.train({"model": "unet", "model_kwargs": {"base_width": 8, "depth": 3}, "data": data,
                            "epochs": epochs, "optim": {"lr": 0.005}, "out_dir": str(out / "teacher"), **quiet})
    # 2. a student 4x cheaper, distilled from the teacher's cached soft maps (CE + KD)
    student = slimcv.distill({"teacher": str(teacher.run_dir), "model": "unet",
                              "model_kwargs": {"base_width": 4, "depth": 3}, "data": data, "epochs": epochs,
                              "optim": {"lr": 0.005}, "mode": "offline", "losses": [{"name": "kd", "temperature": 1}],
                              "cache": {"dir": str(out / "cache")}, "out_dir": str(out / "student"), **quiet})
    # 3. 30% of its parameters removed (structured), fine-tuned with KD from the unpruned student
    pruned = slimcv.prune({"source": str(student.run_dir), "data": data, "remove": 0.3, "finetune_epochs": 1,
                           "distill": [{"name": "kd", "temperature": 1}], "latency_runs": 0,
                           "out_dir": str(out / "pruned"), "progress": False})
    # 4. FP32 ONNX + static INT8, each scored and timed as deployed in ONNX Runtime
    int8 = slimcv.quantize({"source": str(pruned.out_dir), "data": data, "calibration_images": 16,
                            "out_dir": str(out / "int8"), "progress": False})
    # 5. a standalone ONNX file checked against PyTorch, and a cost table of all models timed interleaved
    onnx = slimcv.export(str(pruned.out_dir), out / "pruned.onnx", data)
    costs = slimcv.bench([str(teacher.run_dir), str(pruned.out_dir), str(onnx.path)], batch_sizes=(1,),
                         memory=False, out=out / "bench.json")
    # 6. one HTML page comparing them
    page = slimcv.report([str(teacher.run_dir), str(student.run_dir), str(pruned.out_dir), str(int8.out_dir)],
                         out=out / "report", bench=[out / "bench.json"], images=2)

    key = "miou"
    print(f"teacher {teacher.best['value']:.1f} {key} -> student {student.train.best['value']:.1f} -> pruned "
          f"{pruned.after[key]:.1f} ({pruned.after['params']} params) -> INT8 recommendation: "
          f"{int8.recommendation['name']}; {len(costs.models)} models benched; report {page.html}")

    # The same chain as a recipe: slimcv.run validates it first, skips stages whose manifest matches and
    # resumes an interrupted one. Here every stage is new, so it runs; run it twice and the second is instant.
    recipe = {
        "name": "api", "data": data, "out_dir": str(out / "recipe"),
        "models": {"teacher": {"model": "unet", "model_kwargs": {"base_width": 8, "depth": 3}},
                   "student": {"model": "unet", "model_kwargs": {"base_width": 4, "depth": 3}}},
        "stages": [
            {"name": "teacher", "type": "train", "model": "teacher", "epochs": epochs, **quiet},
            {"name": "distill", "teacher": "teacher", "model": "student", "epochs": epochs, "mode": "offline",
             **quiet},
            {"name": "prune", "input": "distill", "remove": 0.3, "latency_runs": 0, "progress": False},
        ],
    }
    result = slimcv.run(recipe)
    again = slimcv.run(recipe)
    print("second run:", {r.name: r.status for r in again.stages}, "prune params",
          result["prune"].metrics["params"])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/api_example"))
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    main(args.out, args.quick)
