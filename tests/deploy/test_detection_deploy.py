"""Detection end to end: train -> eval -> export -> deploy, with equal boxes in PyTorch and every runtime."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

import slimcv
from slimcv.deploy import runtimes
from slimcv.deploy.boxes import select
from slimcv.deploy.predictor import Predictor
from slimcv.engine.evaluation import evaluate_model
from slimcv.errors import SlimcvError
from slimcv.export import export
from slimcv.models import create_model
from slimcv.models.detection import DenseDetector

DATA = {"spec": "synthetic-shapes:detection", "options": {"size": 64, "length": 96}, "batch_size": 16,
        "workers": 0, "val_subset": 24}
TINY = {"backbone": "mobilenet_v3_small", "width": 0.25, "fpn_channels": 16, "head_convs": 1}
# OpenVINO's default precision is bf16 on CPUs that have it: its boxes are compared with a looser tolerance
EXACT = [rt for rt in (runtimes.ORT, runtimes.OPENVINO_F32) if runtimes.get(rt).available]
ONNX_RUNTIMES = [rt.name for rt in runtimes.available("onnx")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "run"
    result = slimcv.train("slimdet", data=DATA, epochs=3, out_dir=str(out), model_kwargs=TINY, progress=False,
                          tensorboard=False, optim={"name": "adamw", "lr": 0.003})
    onnx = export(out, out / "deploy" / "model.onnx").path
    return out, result, onnx


def _val_images(n: int = 6) -> list[np.ndarray]:
    from slimcv.data.synthetic import synthetic_shapes

    ds = synthetic_shapes("detection", split="val", size=64, length=96)
    return [ds.load(i)[0].permute(1, 2, 0).numpy() for i in range(n)]


def _reference(run_dir, images: list[np.ndarray]) -> tuple[DenseDetector, np.ndarray]:
    """The network in PyTorch, as exported, and its dense outputs on ``images``."""
    net = slimcv.load(run_dir)
    dense = DenseDetector(net.eval(), (64, 64)).eval()
    x = torch.stack([torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images])
    with torch.no_grad():
        return dense, dense(x).numpy()


def test_training_learns_and_every_runtime_scores_the_deployed_file_like_pytorch(trained):
    run_dir, result, onnx = trained
    losses = [h["train"]["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert 0 < result.metrics["map"] <= result.metrics["map50"] <= 100
    assert set(result.metrics["per_class_ap"]) == {"circle", "rectangle", "triangle"}
    again = evaluate_model(run_dir, quiet=True).metrics  # the folder's model: its best epoch's weights
    assert again["map"] == pytest.approx(result.best["value"], abs=1e-6)
    meta = json.loads(onnx.with_name(onnx.name + ".json").read_text())
    assert meta["task"] == "detection" and meta["resize"] == [64, 64] and meta["class_names"] == [
        "circle", "rectangle", "triangle"]
    assert meta["selection"]["nms_iou"] == 0.6 and 0 < meta["score_threshold"] < 1
    for rt in ONNX_RUNTIMES:
        deployed = evaluate_model(onnx, DATA, runtime=rt, quiet=True).metrics
        allowed = 0.05 if rt in EXACT else 2.0
        assert deployed["map"] == pytest.approx(again["map"], abs=allowed), rt


@pytest.mark.parametrize("case", ["zero", "one", "many"])
def test_zero_one_and_many_detections_are_the_same_boxes_in_pytorch_and_every_runtime(trained, case):
    run_dir, _, onnx = trained
    images = _val_images()
    dense, ref = _reference(run_dir, images)
    top = [np.sort(select(d, dense.selection.with_threshold(0.0)).scores)[::-1] for d in ref]
    if case == "zero":
        threshold = float(max(t[0] for t in top)) + 1e-3
    elif case == "one":
        i = int(np.argmax([t[0] - t[1] for t in top]))
        images, ref, threshold = images[i:i + 1], ref[i:i + 1], float(top[i][0] + top[i][1]) / 2
    else:
        threshold = dense.selection.score_threshold
    expected = [select(d, dense.selection.with_threshold(threshold)) for d in ref]
    counts = [len(e) for e in expected]
    assert {"zero": counts == [0] * len(counts), "one": counts == [1],
            "many": min(counts) >= 2}[case], counts
    for rt in ONNX_RUNTIMES:
        got = Predictor(onnx, runtime=rt, score_threshold=threshold).predict_batch(images)
        tol = 1e-2 if rt in EXACT else 1.5
        for e, g in zip(expected, got):
            d = g.detections
            if rt in EXACT or case != "many":  # bf16 may reorder near-equal scores among many boxes
                assert len(d) == len(e), rt
                np.testing.assert_array_equal(d.labels, e.labels)
                np.testing.assert_allclose(d.boxes, e.boxes, atol=tol)


def test_pytorchs_own_boxes_are_the_exported_networks_boxes(trained):
    run_dir, _, _ = trained
    images = _val_images(4)
    dense, ref = _reference(run_dir, images)
    x = torch.stack([torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images])
    with torch.no_grad():
        own = dense.model(x)
    for o, d in zip(own, ref):
        e = select(d, dense.selection)
        keep = o["labels"] > 0
        np.testing.assert_array_equal(o["labels"][keep].numpy() - 1, e.labels)
        np.testing.assert_allclose(o["boxes"][keep].numpy(), e.boxes, atol=1e-4)


def test_predict_writes_boxes_in_the_original_images_pixels(trained, tmp_path):
    _, _, onnx = trained
    image = _val_images(1)[0]
    Image.fromarray(image).save(tmp_path / "a.png")
    Image.fromarray(image).resize((192, 128), Image.NEAREST).save(tmp_path / "wide.png")
    out = tmp_path / "pred"
    r = slimcv.deploy.predict_files(onnx, [tmp_path / "a.png", tmp_path / "wide.png"], out, score_threshold=0.1,
                                    progress=False)
    assert r.task == "detection"
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert rows and set(rows[0]) == {"path", "label", "name", "score", "x1", "y1", "x2", "y2"}
    direct = Predictor(onnx, score_threshold=0.1)(image).boxes()
    small = [r for r in rows if r["path"].endswith("a.png")]
    assert [(int(r["label"]), float(r["x1"])) for r in small] == [(b["label"], b["box"][0]) for b in direct]
    wide = [r for r in rows if r["path"].endswith("wide.png")]
    assert all(float(r["x2"]) <= 192 and float(r["y2"]) <= 128 for r in wide)
    assert max(float(r["x2"]) for r in wide) > 64  # scaled to the 192-pixel-wide original
    assert (out / "overlays" / "a.jpg").is_file() and (out / "overlays" / "wide.jpg").is_file()
    records = json.loads((out / "predictions.json").read_text())
    assert records[0]["boxes"][0].keys() == {"label", "name", "score", "box"}


def test_serve_answers_the_predictors_boxes(trained):
    pytest.importorskip("fastapi")
    from tests.deploy.test_serve import _png, _post, running

    _, _, onnx = trained
    image = _val_images(1)[0]
    predictor = Predictor(onnx, score_threshold=0.1)
    with running(predictor) as (url, _):
        status, _, body = _post(url + "/predict", _png(image), "image/png")
    assert status == 200
    answer = json.loads(body)
    assert answer["boxes"] == predictor(image).boxes() and answer["score_threshold"] == 0.1


def test_a_two_stage_detector_is_refused_for_export_in_one_sentence(tmp_path):
    net = create_model("fasterrcnn_mobilenet_v3_large_320_fpn", 3, size=64)
    with pytest.raises(SlimcvError, match="two-stage") as e:
        export(net, tmp_path / "x.onnx")
    assert str(e.value).count(". ") == 0


def test_the_detection_predictor_needs_no_torch(trained):
    import subprocess
    import sys

    _, _, onnx = trained
    code = ("import sys, numpy as np, slimcv.deploy as d; p = d.load(sys.argv[1], score_threshold=0.0); "
            "r = p(np.full((64, 80, 3), 128, np.uint8)); "
            "assert not [m for m in sys.modules if m.split('.')[0] == 'torch'], 'torch imported'; "
            "print(len(r.boxes()))")
    out = subprocess.run([sys.executable, "-c", code, str(onnx)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) > 0
