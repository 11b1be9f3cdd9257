"""Real run folders from the real stages, on tiny models and synthetic shapes, built once for the report tests."""
from __future__ import annotations

from pathlib import Path

import pytest

DATA = {"spec": "synthetic-shapes", "options": {"size": 32, "length": 32}, "batch_size": 8, "workers": 0}


def _train(out: Path, width: int) -> Path:
    from slimcv.engine.train import train

    train({"model": "unet_small", "model_kwargs": {"base_width": width, "depth": 2}, "data": DATA, "epochs": 3,
           "optim": {"lr": 0.01}, "out_dir": str(out), "progress": False, "tensorboard": False, "threads": 1})
    return out


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    """teacher and student (train), pruned (prune stage), quantized (quantize stage)."""
    from slimcv.prune.prune import prune
    from slimcv.quantize.quantize import quantize

    root = tmp_path_factory.mktemp("runs")
    teacher = _train(root / "teacher", 8)
    student = _train(root / "student", 4)
    prune({"source": str(teacher), "data": DATA, "remove": 0.4, "out_dir": str(root / "pruned"), "progress": False})
    quantize({"source": str(teacher), "data": DATA, "calibration": ["minmax"], "calibration_images": 8,
              "latency_runs": 3, "threads": 1, "out_dir": str(root / "quantized"), "progress": False})
    return {"teacher": teacher, "student": student, "pruned": root / "pruned", "quantized": root / "quantized"}


@pytest.fixture(scope="session")
def rendered(runs, tmp_path_factory):
    """The report over all four runs, with latencies measured and two overlay images."""
    from slimcv.report.report import report

    out = tmp_path_factory.mktemp("report")
    paths = [runs["teacher"], runs["student"], runs["pruned"], runs["quantized"]]
    return report(paths, out=out, images=2, measure=True, threads=1, quiet=True), out
