"""Detector distillation: the neck and head terms fall while the student trains, the report sets the student
against its control, and the head term is skipped (with a warning) when the heads do not match."""
from __future__ import annotations

import pytest
import torch

import slimcv
from slimcv.distill.detection import DetectionDistillObjective
from slimcv.errors import SlimcvError
from slimcv.models import create_model

from tests.conftest import TINY_DETECTION_DATA, TINY_DETECTOR

STUDENT = {**TINY_DETECTOR, "width": 0.25, "fpn_channels": 8}  # a narrower neck than the teacher: an adapter
QUIET = {"progress": False, "tensorboard": False, "optim": {"name": "adamw", "lr": 0.003}}


def test_a_detector_distils_its_terms_fall_and_the_report_compares_it_with_its_control(tiny_detector_run, tmp_path):
    kd = slimcv.distill("slimdet", teacher=str(tiny_detector_run), data=TINY_DETECTION_DATA, epochs=3,
                        out_dir=str(tmp_path / "kd"), model_kwargs=STUDENT, seed=1,
                        losses=[{"name": "kd"}, {"name": "feature"}], **QUIET)
    first, last = kd.train.history[0]["train"], kd.train.history[-1]["train"]
    assert {"kd", "feature", "classification", "bbox_regression"} <= set(first)
    assert last["feature"] < first["feature"] and last["kd"] < first["kd"]
    assert [r["model"] for r in kd.comparison] == ["teacher", "student"] and "map" in kd.comparison[1]
    slimcv.train("slimdet", data=TINY_DETECTION_DATA, epochs=3, out_dir=str(tmp_path / "alone"),
                 model_kwargs=STUDENT, seed=1, **QUIET)
    report = slimcv.report([str(tmp_path / "alone"), str(tmp_path / "kd")], out=tmp_path / "rep", images=0,
                           quiet=True)
    said = report.markdown.read_text()
    assert "the same student trained alone (alone" in said
    again = slimcv.load(tmp_path / "kd")  # the adapters trained with the student are not part of it
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in kd.model.parameters())


def test_head_kd_needs_matching_heads_and_otherwise_only_the_neck_is_distilled():
    torch.manual_seed(0)
    teacher = create_model("slimdet", 3, size=48, **TINY_DETECTOR).eval()
    same = create_model("slimdet", 3, size=48, **STUDENT)
    other = create_model("slimdet", 3, size=96, **STUDENT)  # upsamples the 48-pixel images: other locations
    x = torch.rand(2, 3, 48, 48)
    matched = DetectionDistillObjective(teacher, same, x[:1], feature_weight=None)  # the default: kd where it can
    assert matched.matched and matched.feature_weight == 0 and len(matched.adapters) == 0
    with pytest.warns(UserWarning, match="only the neck"):
        loose = DetectionDistillObjective(teacher, other, x[:1], feature_weight=None)
    assert loose.feature_weight == 1
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 30.0]]), "labels": torch.tensor([1])}] * 2
    out = loose(other.train(), x, targets)
    assert "kd" not in out and out["feature"] > 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert loose.adapters[0].weight.grad is not None  # the 8-to-16-channel adapter learns with the student


def test_detection_distill_refuses_losses_and_modes_it_cannot_apply(tiny_detector_run, tmp_path):
    with pytest.raises(SlimcvError, match="kd .*feature"):
        slimcv.distill("slimdet", teacher=str(tiny_detector_run), data=TINY_DETECTION_DATA, epochs=1,
                       model_kwargs=STUDENT, losses=[{"name": "cwd"}], **QUIET)
    with pytest.raises(SlimcvError, match="online"):
        slimcv.distill("slimdet", teacher=str(tiny_detector_run), data=TINY_DETECTION_DATA, epochs=1,
                       model_kwargs=STUDENT, mode="offline", **QUIET)
