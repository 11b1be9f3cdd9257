"""Distilling on images without labels: the cross-entropy skips them, the KD terms and the teacher cache use them."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import slimcv
from slimcv.distill.unlabelled import UNLABELLED, labelled_share, split_targets
from slimcv.engine.loop import SupervisedLoss
from slimcv.errors import SlimcvError

DATA = {"spec": "synthetic-shapes", "options": {"size": 32, "length": 48}, "batch_size": 8, "workers": 0,
        "val_subset": 16}
UNET = {"base_width": 2, "depth": 3}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("ul") / "teacher"
    slimcv.train({"model": "unet", "model_kwargs": {"base_width": 4, "depth": 3}, "data": DATA, "epochs": 2,
                  "out_dir": str(out), "progress": False, "tensorboard": False, "optim": {"lr": 0.005}})
    return out


def _folder(root, n: int = 12):
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def test_targets_split_so_cross_entropy_skips_and_kd_keeps_the_unlabelled():
    t = torch.tensor([[0, 1], [UNLABELLED, 255]])
    ce, kd = split_targets(t, 255)
    assert ce.tolist() == [[0, 1], [255, 255]] and kd.tolist() == [[0, 1], [0, 255]]
    same = torch.tensor([1, 2])
    assert split_targets(same, 255)[0] is same
    # every image weighs the same: the CE (a mean over labelled pixels) counts for the labelled share of the batch
    assert labelled_share(ce, kd, 255) == pytest.approx(2 / 3) and labelled_share(same, same, 255) == 1.0
    loss = SupervisedLoss(255).ce(torch.randn(2, 3, requires_grad=True), torch.tensor([255, 255]))
    assert loss.item() == 0.0 and loss.requires_grad  # a batch of unlabelled images only: zero, not NaN


def test_an_image_folder_without_masks_is_distilled_offline_and_the_cache_covers_it(teacher, tmp_path):
    images = _folder(tmp_path / "photos")
    out = tmp_path / "student"
    r = slimcv.distill({"teacher": str(teacher), "model": "unet", "model_kwargs": UNET,
                        "data": {**DATA, "subset": 8}, "epochs": 1, "mode": "offline", "unlabelled": str(images),
                        "out_dir": str(out), "progress": False, "tensorboard": False})
    assert np.isfinite(r.train.history[-1]["train"]["loss"])
    meta = json.loads(next((out / "teacher_cache").rglob("meta.json")).read_text())
    assert meta["samples"] == 8 + 12 and meta["data"]["unlabelled"] == str(images)
    config = json.loads((out / "config.json").read_text())
    assert config["unlabelled"] == str(images) and config["data"]["subset"] == 8


def test_unlabelled_images_change_what_the_student_learns(teacher, tmp_path):
    def run(name, **extra):
        return slimcv.distill({"teacher": str(teacher), "model": "unet", "model_kwargs": UNET,
                               "data": {**DATA, "subset": 8}, "epochs": 1, "mode": "online", "seed": 3,
                               "out_dir": str(tmp_path / name), "progress": False, "tensorboard": False,
                               "deterministic": True, **extra}).train.history[-1]["train"]
    plain = run("plain")
    more = run("more", unlabelled={"spec": "synthetic-shapes", "options": {"size": 32, "length": 24, "seed": 7}})
    assert more["kd"] != plain["kd"]  # 8 labelled + 24 unlabelled images: 4 steps an epoch instead of 1
    assert more["ce"] > 0 and more["kd"] > 0


def test_bad_unlabelled_sources_are_one_sentence(teacher, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SlimcvError, match="No images"):
        slimcv.distill({"teacher": str(teacher), "model": "unet", "model_kwargs": UNET, "data": DATA, "epochs": 1,
                        "unlabelled": str(empty), "out_dir": str(tmp_path / "s"), "progress": False})
