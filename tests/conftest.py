"""Shared fixtures: tiny registered models, paths to the real data, and tests confined to tmp_path."""
from __future__ import annotations

import os
from pathlib import Path

# One thread per test process unless told otherwise: on a 2-core machine shared with other jobs, OpenMP
# threads spin against each other and a 1 ms forward can take a second. Tests that time things pass threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Runs are compared bit for bit across tests; the speed probe chooses precision by timing, so it is off unless a
# test turns it on (tests/engine/test_speed.py).
os.environ.setdefault("SLIMCV_SPEED_PROBE", "0")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn

from slimcv.models import MODELS  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()


class TinySeg(nn.Module):
    """A BatchNorm-free two-layer segmentation net: its training is identical across DDP shardings."""

    def __init__(self, num_classes: int, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                                  nn.ReLU(), nn.Conv2d(width, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _register_test_models() -> None:
    if "tiny_seg_test" not in MODELS:
        MODELS.register("tiny_seg_test", task="segmentation", family="test")(lambda num_classes, width=8: TinySeg(num_classes, width))


_register_test_models()


@pytest.fixture(autouse=True)
def _confine_writes(tmp_path, monkeypatch):
    """Run every test inside its own tmp_path so relative outputs (runs/...) never land in the repo."""
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture
def camvid_root() -> Path:
    root = SHARED_DATA / "camvid"
    if not (root / "train.txt").is_file():
        pytest.skip("real CamVid copy not found in ../shared/data/camvid")
    return root


@pytest.fixture
def cifar_root() -> Path:
    root = SHARED_DATA / "cifar10"
    if not (root / "train").is_dir():
        pytest.skip("real CIFAR-10 copy not found in ../shared/data/cifar10")
    return root


TINY_DETECTION_DATA = {"spec": "synthetic-shapes:detection", "options": {"size": 48, "length": 32}, "batch_size": 8,
                       "workers": 0, "val_subset": 8}
TINY_DETECTOR = {"backbone": "mobilenet_v3_small", "width": 0.25, "fpn_channels": 16, "head_convs": 1}


@pytest.fixture(scope="session")
def tiny_detector_run(tmp_path_factory) -> Path:
    """A slimdet trained two epochs on 48-pixel synthetic shapes: a detector's run folder (do not write into it)."""
    import slimcv

    out = tmp_path_factory.mktemp("tiny_detector") / "det"
    slimcv.train("slimdet", data=TINY_DETECTION_DATA, epochs=2, out_dir=str(out), model_kwargs=TINY_DETECTOR,
                 progress=False, tensorboard=False, optim={"name": "adamw", "lr": 0.003})
    return out
