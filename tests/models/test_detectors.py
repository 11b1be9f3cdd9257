"""Registered detectors: torchvision's contract in and out, the static network as deployed, clear refusals."""
from __future__ import annotations

import pytest
import torch

from slimcv.errors import SlimcvError
from slimcv.models import create_model, list_models, model_task
from slimcv.models.detection import TORCHVISION, DenseDetector, is_detector

TINY = {"backbone": "mobilenet_v3_small", "width": 0.25, "fpn_channels": 16, "head_convs": 1}


def _targets():
    return [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([2])},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]  # an image without objects


@pytest.mark.parametrize("name", [*TORCHVISION, "slimdet"])
def test_each_registered_detector_trains_and_predicts_by_torchvisions_contract(name):
    assert model_task(name) == "detection" and name in list_models("detection")
    torch.manual_seed(0)
    model = create_model(name, 3, size=64, **(TINY if name == "slimdet" else {}))
    assert is_detector(model)
    x = torch.rand(2, 3, 64, 64)
    losses = model.train()(list(x), _targets())
    assert losses and all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    with torch.no_grad():
        out = model.eval()(x)
    assert len(out) == 2 and set(out[0]) >= {"boxes", "scores", "labels"}
    assert out[0]["boxes"].shape[-1] == 4 and (out[0]["labels"] <= 3).all()  # 3 classes + background
    if name.startswith("fasterrcnn"):
        with pytest.raises(SlimcvError, match="two-stage"):
            DenseDetector(model, (64, 64))
        return
    dense = DenseDetector(model, (64, 64)).eval()
    with torch.no_grad():
        y = dense(x)
    assert y.shape == (2, sum(dense.selection.levels), 4 + 3)
    assert (y[..., :4] >= 0).all() and (y[..., [0, 2]] <= 64).all() and (y[..., 4:] <= 1).all()


def test_slimdet_sizes_and_bad_options():
    small = create_model("slimdet_s", 3, size=96)
    large = create_model("slimdet_m", 3, size=96)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(small) < count(large)
    assert small.transform.min_size == (96,) and small.transform.max_size == 96
    with pytest.raises(SlimcvError, match="multiple of 8"):
        create_model("slimdet", 3, fpn_channels=20)
    with pytest.raises(SlimcvError, match="backbone"):
        create_model("slimdet", 3, backbone="vgg11")


def test_slimcv_models_lists_the_detectors(capsys):
    from slimcv.cli import main

    assert main(["models", "--task", "detection"]) in (0, None)
    out = capsys.readouterr().out
    assert "slimdet_s" in out and "ssdlite320_mobilenet_v3_large" in out and "resnet18" not in out


def test_slimdet_backbones_keep_batchnorm_statistics_that_follow_a_short_schedule():
    # torchvision's MobileNetV3 momentum (0.01) left slimdet_s at 13.5 mAP after 10 epochs on synthetic detection
    # where 0.1 reached 41.7: the running statistics lagged the weights the evaluation runs with
    for backbone in ("mobilenet_v3_small", "mobilenet_v3_large"):
        model = create_model("slimdet", 3, size=64, **{**TINY, "backbone": backbone})
        assert {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.1}


def test_the_default_detection_student_learns_from_scratch(tmp_path):
    # the compress search trains slimdet_s students from random initialisation: they must find objects within a
    # few epochs (an untrained one scores 0; this one reaches about 6 mAP after 4 epochs at 64 pixels)
    import slimcv

    data = {"spec": "synthetic-shapes:detection", "options": {"size": 64, "length": 256}, "batch_size": 16,
            "workers": 0, "val_subset": 48}
    r = slimcv.train({"model": "slimdet_s", "model_kwargs": {"width": 0.5}, "data": data, "epochs": 4, "seed": 0,
                      "optim": {"name": "adamw", "lr": 0.002, "weight_decay": 0.05}, "schedule": {"warmup_epochs": 1},
                      "out_dir": str(tmp_path / "run"), "progress": False, "tensorboard": False, "threads": 1})
    assert r.best["value"] > 3.0, r.best
