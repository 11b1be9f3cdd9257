"""Detection through the shared engine: a resumed run equals an uninterrupted one; a user's detector trains."""
from __future__ import annotations

import pytest
import torch
import torchvision

import slimcv
from slimcv.models.detection import fit_input_size

DATA = {"spec": "synthetic-shapes:detection", "options": {"size": 48, "length": 48}, "batch_size": 8,
        "workers": 0, "val_subset": 12}
TINY = {"backbone": "mobilenet_v3_small", "width": 0.25, "fpn_channels": 16, "head_convs": 1}


def _train(out, epochs: int, resume: bool = False):
    return slimcv.train("slimdet", data=DATA, epochs=epochs, out_dir=str(out), model_kwargs=TINY, progress=False,
                        tensorboard=False, deterministic=True, seed=5, resume=resume,
                        optim={"name": "adamw", "lr": 0.003})


def test_a_resumed_detection_run_is_identical_to_an_uninterrupted_one(tmp_path, monkeypatch):
    whole = _train(tmp_path / "whole", 3)
    from slimcv.engine import train as engine

    saved = engine._save_epoch

    def stop_after_two(run_dir, record, *args):
        saved(run_dir, record, *args)
        if record["epoch"] == 2:
            raise KeyboardInterrupt  # as a Ctrl-C right after epoch 2's checkpoint

    monkeypatch.setattr(engine, "_save_epoch", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "split", 3)
    monkeypatch.setattr(engine, "_save_epoch", saved)
    resumed = _train(tmp_path / "split", 3, resume=True)
    assert [h["train"]["loss"] for h in resumed.history] == [h["train"]["loss"] for h in whole.history]
    assert resumed.metrics["map"] == whole.metrics["map"]
    assert resumed.metrics["per_class_ap"] == whole.metrics["per_class_ap"]


def test_a_users_torchvision_detector_trains_in_place_and_reloads_from_its_folder(tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=4)
    fit_input_size(net, 48)
    result = slimcv.train(net, data=DATA, epochs=1, out_dir=str(tmp_path / "mine"), progress=False,
                          tensorboard=False)
    assert result.model is net and "map" in result.metrics
    again = slimcv.load(tmp_path / "mine")
    x = torch.rand(1, 3, 48, 48)
    with torch.no_grad():
        a, b = net.eval()(x)[0], again.eval()(x)[0]
    torch.testing.assert_close(a["boxes"], b["boxes"])


DDP_DETECTION = """
import json, sys
import slimcv
from slimcv.engine import distributed as D
r = slimcv.train("slimdet", data={data!r}, epochs=1, out_dir={out!r}, model_kwargs={tiny!r}, progress=False,
                 tensorboard=False, seed=2, optim={{"name": "adamw", "lr": 0.003}})
if D.is_main():
    json.dump({{"map": r.metrics["map"], "map50": r.metrics["map50"], "images": r.metrics["images"]}},
              open({out!r} + "/result.json", "w"))
"""


def test_two_process_ddp_trains_a_detector_and_scores_it_like_one_process(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from slimcv.engine.evaluation import evaluate_model

    script = tmp_path / "ddp.py"
    data = {**DATA, "batch_size": 4, "val_subset": 13}  # an odd count: one rank scores one image more
    script.write_text(DDP_DETECTION.format(data=data, out=str(tmp_path / "ddp"), tiny=TINY))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "result.json").read_text())
    one = evaluate_model(tmp_path / "ddp", quiet=True).metrics  # the same weights, scored in one process
    assert ddp["images"] == one["images"] == 13
    # the ranks batch other images together than one process does: float differences of about 1e-7 in the scores
    # can swap near-tied detections, which moves mAP (in points) by a few 1e-6
    assert ddp["map"] == pytest.approx(one["map"], abs=1e-4) and ddp["map50"] == pytest.approx(one["map50"], abs=1e-4)
