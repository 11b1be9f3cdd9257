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
    assert json.loads((r.cache / "meta.json").read_text())["samples"] == 16
