"""Deployment: the runtime chooser picks the fastest measured candidate within budget; the predictor matches eval."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from slimcv import deploy
from slimcv.bench.latency import eager_runner, time_interleaved
from slimcv.data import load_data
from slimcv.deploy.chooser import Candidate, choose_runtime
from slimcv.deploy.deployed import DeployedModule, deployed_runner
from slimcv.errors import SlimcvError
from slimcv.export import ExportConfig, export, export_module
from slimcv.models import create_model

SEG = {"spec": "synthetic-shapes", "options": {"size": 40, "length": 4}, "workers": 0}
CLS = {"spec": "synthetic-shapes:classification", "options": {"size": 32, "length": 4}, "workers": 0}


def test_chooser_picks_the_fastest_measured_candidate_within_budget(tmp_path):
    small = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1))
    big = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), *[nn.Conv2d(16, 16, 3, padding=1) for _ in range(6)])
    x = torch.randn(1, 3, 64, 64)
    big_onnx = export_module(big, tmp_path / "big.onnx", [x], task="segmentation", cfg=ExportConfig(), meta={}).path
    t = time_interleaved({"small": eager_runner(small, x), "big_ort": deployed_runner(big_onnx, x, threads=1)},
                         warmup=2, runs=10, threads=1)
    cands = [Candidate("small", 70.0, t["small"].median_ms, "pytorch"),
             Candidate("big_ort", 70.2, t["big_ort"].median_ms, "ort")]
    rec = choose_runtime(cands, max_drop=0.5)
    assert rec.name == "small" and "fastest" in rec.why and "big_ort" in rec.why
    # once the cheap candidate is outside the budget, the slower accurate one wins
    rec = choose_runtime([Candidate("small", 60.0, t["small"].median_ms, "pytorch", "int8"), cands[1]], max_drop=0.5)
    assert rec.name == "big_ort" and "over budget" in rec.why


def test_chooser_errors_and_no_candidate_within_budget():
    with pytest.raises(SlimcvError, match="No deployment candidates"):
        choose_runtime([])
    rec = choose_runtime([Candidate("a", 50, 1.0, precision="int8"), Candidate("b", 48, 0.5, precision="int8")],
                         max_drop=0.5, reference=60)
    assert rec.name == "a" and "no candidate is within" in rec.why


@pytest.mark.parametrize("data,name", [(SEG, "unet"), (CLS, "resnet8")])
def test_predictor_reproduces_validation_pipeline(data, name, tmp_path):
    bundle = load_data(data)
    torch.manual_seed(0)
    net = create_model(name, bundle.num_classes, **({"base_width": 2, "depth": 3} if name == "unet" else {})).eval()
    path = export(net, tmp_path / "m.onnx", bundle, samples=2).path
    predictor = deploy.load(path)
    raw = bundle.val.dataset if hasattr(bundle.val, "dataset") else bundle.val
    image = raw.load(0)[0].permute(1, 2, 0).numpy()  # HxWx3 uint8, as a user would pass it
    pred = predictor(image)
    with torch.no_grad():
        logits = net(bundle.val[0][0][None])[0]
    if name == "unet":
        assert pred.mask.shape == image.shape[:2]
        assert (pred.mask == logits.argmax(0).numpy()).mean() > 0.99
    else:
        assert pred.label == int(logits.argmax()) and pred.name == bundle.info.class_names[pred.label]
        np.testing.assert_allclose(pred.probs, torch.softmax(logits, 0).numpy(), atol=1e-4)


def test_predictor_needs_no_torch_and_a_sidecar(tmp_path):
    bundle = load_data(CLS)
    path = export(create_model("resnet8", bundle.num_classes), tmp_path / "m.onnx", bundle, samples=1).path
    code = ("import sys, numpy as np, slimcv.deploy as d; p = d.load(sys.argv[1]); "
            "r = p(np.zeros((32, 32, 3), np.uint8)); "
            "assert not [m for m in sys.modules if m.split('.')[0] == 'torch'], 'torch imported'; print(r.label)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 0 <= int(out.stdout.strip()) < bundle.num_classes
    Path(str(path) + ".json").unlink()
    with pytest.raises(SlimcvError, match="preprocessing"):
        deploy.load(path)


def test_deployed_module_scores_like_pytorch(tmp_path):
    from slimcv.engine.loop import evaluate
    from slimcv.engine.train import make_eval_loader

    bundle = load_data(SEG)
    torch.manual_seed(0)
    net = create_model("unet", bundle.num_classes, base_width=2, depth=3).eval()
    path = export(net, tmp_path / "m.onnx", bundle, samples=1).path
    loader = make_eval_loader(bundle.val, 2, 0, 255)
    ev = dict(task="segmentation", num_classes=bundle.num_classes)
    a = evaluate(net, loader, torch.device("cpu"), **ev)
    b = evaluate(DeployedModule(path), loader, torch.device("cpu"), **ev)
    assert b["miou"] == pytest.approx(a["miou"], abs=1e-6) and b["per_class_iou"] == a["per_class_iou"]
