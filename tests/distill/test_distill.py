import json

import pytest

import slimcv
from slimcv.distill.distill import distill
from slimcv.errors import SlimcvError

SYN = {"spec": "synthetic-shapes", "options": {"size": 32, "length": 48}, "batch_size": 8, "workers": 0,
       "val_subset": 16}
COMMON = {"progress": False, "tensorboard": False, "optim": {"name": "adam", "lr": 0.005}}


@pytest.fixture
def teacher_run(tmp_path):
    slimcv.train({"model": "unet_small", "model_kwargs": {"base_width": 8, "depth": 2}, "data": SYN, "epochs": 2,
                  "out_dir": str(tmp_path / "teacher"), **COMMON})
    return tmp_path / "teacher"


@pytest.mark.parametrize("mode,losses", [("online", [{"name": "kd"}, {"name": "cwd", "weight": 0.5}]),
                                         ("offline", [{"name": "kd"}]),
                                         ("online", [{"name": "kd"}, {"name": "feature", "weight": 1.0,
                                                      "layers": [["encoders.1", "encoders.1"]]}])])
def test_distill_runs_and_compares(teacher_run, tmp_path, mode, losses):
    out = tmp_path / f"student_{mode}_{len(losses)}"
    r = distill({"teacher": str(teacher_run), "model": "unet_small", "model_kwargs": {"base_width": 4, "depth": 2},
                 "data": SYN, "epochs": 1, "mode": mode, "losses": losses, "cache": {"dir": str(tmp_path / "c")},
                 "out_dir": str(out), **COMMON})
    rows = json.loads((out / "comparison.json").read_text())
    assert [row["model"] for row in rows] == ["teacher", "student"]
    assert rows[0]["macs"] > 3 * rows[1]["macs"]
    logged = r.train.history[0]["train"]
    assert logged["kd"] > 0 and logged["ce"] > 0
    if any(s["name"] == "feature" for s in losses):
        assert logged["feature"] > 0
    assert (r.cache is not None) == (mode == "offline")


def test_distill_errors_are_clear(teacher_run, tmp_path):
    base = {"model": "unet_small", "data": SYN, "epochs": 1, "out_dir": str(tmp_path / "x"), **COMMON}
    with pytest.raises(SlimcvError, match="has no weights"):
        distill({**base, "teacher": "unet"})
    with pytest.raises(SlimcvError, match="Unknown kd loss"):
        distill({**base, "teacher": str(teacher_run), "losses": [{"name": "kdd"}]})
    with pytest.raises(SlimcvError, match="has no layer"):
        distill({**base, "teacher": str(teacher_run), "losses": [{"name": "feature", "layers": [["nope", "head"]]}]})


@pytest.mark.data
def test_short_offline_distillation_on_camvid(camvid_root, tmp_path):
    data = {"spec": f"camvid:{camvid_root}", "size": [88, 120], "batch_size": 4, "workers": 0, "subset": 8,
            "val_subset": 4}
    slimcv.train({"model": "unet_small", "model_kwargs": {"base_width": 8, "depth": 3}, "data": data, "epochs": 1,
                  "out_dir": str(tmp_path / "t"), **COMMON})
    r = distill({"teacher": str(tmp_path / "t"), "model": "unet_small", "model_kwargs": {"base_width": 4, "depth": 3},
                 "data": data, "epochs": 1, "mode": "offline", "cache": {"dir": str(tmp_path / "c"), "scale": 0.5},
                 "out_dir": str(tmp_path / "s"), **COMMON})
    meta = json.loads((r.cache / "meta.json").read_text())
    # subset 8: the teacher ran on those 8 training images only, not on all 367
    assert meta["samples"] == 8 and meta["data"]["subset"] == 8 and meta["format"]["dtype"] == "uint8"
    assert r.comparison[1]["miou"] >= 0 and "Sky" in r.comparison[1]["per_class"]


def test_the_offline_cache_goes_under_the_students_out_dir(teacher_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = {**SYN, "subset": 16}
    r = distill({"teacher": str(teacher_run), "model": "unet_small", "data": data, "epochs": 1, "mode": "offline",
                 "out_dir": str(tmp_path / "student"), **COMMON})
    assert r.cache.parent == tmp_path / "student" / "teacher_cache" and not (tmp_path / "runs").exists()
    meta = json.loads((r.cache / "meta.json").read_text())
    assert meta["samples"] == 16
    assert meta["format"]["scale"] == 1.0  # scale: auto keeps a small cache at the training size


def test_kd_weight_warms_up_linearly_and_the_step_count_is_checkpointed():
    import torch

    from slimcv.config import LossSpec
    from slimcv.distill.distill import DistillObjective

    torch.manual_seed(0)
    student, teacher = torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(3, 4, 1)
    images, targets = torch.randn(2, 3, 8, 8), torch.randint(0, 4, (2, 8, 8))
    plain = DistillObjective(teacher, (LossSpec(name="kd"),), 1.0, 255, None, None)
    warm = DistillObjective(teacher, (LossSpec(name="kd"),), 1.0, 255, None, None, warmup_steps=4)
    ref = plain(student, images, targets)
    ramps = []
    for _ in range(6):
        out = warm(student, images, targets)
        ramps.append(((out["loss"] - out["ce"]) / ref["kd"]).item())
    assert ramps == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0], abs=1e-5)
    resumed = DistillObjective(teacher, (LossSpec(name="kd"),), 1.0, 255, None, None, warmup_steps=8)
    resumed.load_state_dict(warm.state_dict())  # a resumed run continues the ramp where it was
    out = resumed(student, images, targets)
    assert ((out["loss"] - out["ce"]) / ref["kd"]).item() == pytest.approx(7 / 8, abs=1e-5)


def test_the_default_temperature_is_one_for_maps_and_four_for_logits():
    import torch

    from slimcv.distill.losses import default_temperature, kd

    assert default_temperature(torch.zeros(2, 3, 4, 4)) == 1.0
    assert default_temperature(torch.zeros(2, 10)) == 4.0
    from slimcv.config import DistillConfig

    assert DistillConfig(teacher="t").losses[0].temperature is None  # resolved by the logits' shape
    from slimcv.config import LossSpec
    from slimcv.distill.distill import DistillObjective

    torch.manual_seed(0)
    for student, images, targets, t in ((torch.nn.Linear(3, 10), torch.randn(4, 3), torch.randint(0, 10, (4,)), 4.0),
                                        (torch.nn.Conv2d(3, 5, 1), torch.randn(2, 3, 6, 6),
                                         torch.randint(0, 5, (2, 6, 6)), 1.0)):
        teacher = type(student)(*((3, 10) if t == 4.0 else (3, 5, 1)))
        out = DistillObjective(teacher, (LossSpec(name="kd"),), 1.0, 255, None, None)(student, images, targets)
        with torch.no_grad():
            expected = kd(student(images), teacher(images), targets, temperature=t)["loss"]
        assert out["kd"].item() == pytest.approx(expected.item(), rel=1e-5)
