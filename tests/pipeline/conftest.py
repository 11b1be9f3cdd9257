"""A tiny recipe (32 px synthetic shapes, U-Nets of a few thousand parameters) shared by the pipeline tests."""
from __future__ import annotations

import copy

import pytest
import yaml

QUIET = {"progress": False, "tensorboard": False}
TINY = {
    "name": "tiny",
    "data": {"spec": "synthetic-shapes", "options": {"size": 32, "length": 32}, "batch_size": 8, "workers": 0,
             "val_subset": 8},
    "models": {"teacher": {"model": "unet", "model_kwargs": {"base_width": 4, "depth": 2}},
               "student": {"model": "unet", "model_kwargs": {"base_width": 2, "depth": 2}}},
    "stages": [
        {"name": "teacher", "type": "train", "model": "teacher", "epochs": 2, "optim": {"lr": 0.01}, **QUIET},
        {"name": "distill", "teacher": "teacher", "model": "student", "epochs": 1, "mode": "offline", **QUIET},
        {"name": "prune", "input": "distill", "remove": 0.3, "finetune_epochs": 1, "latency_runs": 0,
         "progress": False},
    ],
}


@pytest.fixture
def tiny() -> dict:
    """A fresh copy of the tiny recipe as a dict."""
    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_yaml(tmp_path, tiny):
    """The tiny recipe written to a YAML file."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny, sort_keys=False))
    return path
