"""INT8: calibration on real images, static PTQ smaller and accurate as deployed, dynamic, QAT round trip, errors."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.utils.data import Subset

from slimcv.data import load_data
from slimcv.errors import SlimcvError
from slimcv.export import ExportConfig, export, export_module
from slimcv.models import create_model
from slimcv.quantize import calibration_set, quantize
from slimcv.quantize.calibration import ImageCalibrationReader
from slimcv.quantize.dynamic import dynamic_applicability, quantize_dyn
from slimcv.quantize.ptq import quantize_ptq

SEG = {"spec": "synthetic-shapes", "options": {"size": 32, "length": 64}, "batch_size": 8, "workers": 0}


def _ops(path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    """A tiny U-Net trained three epochs on synthetic shapes: a run folder like `slimcv train` writes."""
    from slimcv.engine.train import train

    out = tmp_path_factory.mktemp("seg") / "run"
    train({"model": "unet", "model_kwargs": {"base_width": 4, "depth": 2}, "data": SEG, "epochs": 3,
           "optim": {"lr": 0.02}, "out_dir": str(out), "progress": False, "tensorboard": False})
    return out


def test_calibration_reader_feeds_real_training_images():
    data = load_data(SEG)
    calib = calibration_set(data)
    reader = ImageCalibrationReader(calib, 5, "input", ["batch", 3, "h", "w"])
    feeds = []
    while (item := reader.get_next()) is not None:
        feeds.append(item["input"])
    assert len(feeds) == len(reader) == 5
    step = len(calib) // 5
    for k, x in enumerate(feeds):  # exactly the training images, preprocessed like validation (no augmentation)
        assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32
        np.testing.assert_array_equal(x[0], calib[k * step][0].numpy())
    assert feeds[0].std() > 0.1 and not np.array_equal(feeds[0], feeds[1])
    reader.rewind()
    np.testing.assert_array_equal(reader.get_next()["input"], feeds[0])


def test_empty_or_misshaped_calibration_is_a_clear_error():
    calib = calibration_set(load_data(SEG))
    with pytest.raises(SlimcvError, match="at least one image"):
        ImageCalibrationReader(calib, 0, "input")
    with pytest.raises(SlimcvError, match="calibration set is empty"):
        ImageCalibrationReader(Subset(calib, []), 8, "input")
    with pytest.raises(SlimcvError, match=r"expects \(1, 1, 32, 32\)"):
        ImageCalibrationReader(calib, 4, "input", [1, 1, 32, 32])
    with pytest.warns(UserWarning, match="resizing the 32x32 calibration images"):  # a file exported at 64x64
        reader = ImageCalibrationReader(calib, 4, "input", ["batch", 3, 64, 64])
    assert reader.get_next()["input"].shape == (1, 3, 64, 64)


def expected_rows(files: dict[str, str]) -> set[str]:
    """The rows the runtime table promises for these (name: precision) files on this machine."""
    from slimcv.deploy import runtimes
    from slimcv.quantize.nncf_ptq import unavailable

    rows = {"fp32_pytorch"} | ({"bf16_pytorch"} if runtimes.get("eager-bf16").available else set())
    if unavailable() is None:
        files = {**files, "int8_nncf": "int8"}
    for name, precision in files.items():
        path = "m.xml" if name == "int8_nncf" else "m.onnx"
        for rt in runtimes.available("onnx"):
            if runtimes.pairs_with(rt, precision) and runtimes.reads(rt, path):
                rows.add(name + ("" if rt.name == "ort" else f"_{rt.name}"))
    return rows


def test_quantize_stage_ptq_dynamic_and_deployed_metrics(seg_run, tmp_path):
    r = quantize({"source": str(seg_run), "data": SEG, "calibration": ["minmax", "percentile"],
                  "calibration_images": 16, "dynamic": True, "latency_runs": 3, "out_dir": str(tmp_path / "q"),
                  "threads": 1, "progress": False})
    info = json.loads((tmp_path / "q" / "quantize.json").read_text())
    assert info["stage"] == "quantize" and info["task"] == "segmentation" and info["data"]["spec"] == SEG["spec"]
    by = {m["name"]: m for m in info["models"]}
    # no dynamic ops; every file in every runtime here that reads it, plus NNCF's IR where OpenVINO is installed
    assert set(by) == expected_rows({"fp32": "fp32", "int8_minmax": "int8", "int8_percentile": "int8"})
    assert any("does not apply" in n for n in info["notes"])
    for m in info["models"]:
        assert {"path", "precision", "runtime", "metrics", "file_bytes", "latency_ms", "threads"} <= set(m)
        assert "per_class_iou" in m["metrics"] and m["latency_ms"]["median"] > 0
    fp32, int8 = by["fp32"], by["int8_minmax"]
    assert fp32["metrics"]["miou"] == pytest.approx(by["fp32_pytorch"]["metrics"]["miou"], abs=1e-6)
    assert int8["file_bytes"] < fp32["file_bytes"]  # tiny net: node overhead dominates; the CIFAR test checks >= 3x
    weights = [i for i in onnx.load(str(tmp_path / "q" / int8["path"])).graph.initializer if len(i.dims) == 4]
    assert weights and all(i.data_type == onnx.TensorProto.INT8 for i in weights)
    assert fp32["metrics"]["miou"] > 20 and abs(int8["metrics"]["miou"] - fp32["metrics"]["miou"]) < 5.0
    assert _ops(tmp_path / "q" / int8["path"])["QuantizeLinear"] > 0
    assert json.loads((tmp_path / "q" / "model_int8_minmax.onnx.json").read_text())["calibration_images"] == 16
    assert info["recommendation"]["name"] in by and "fastest" in r.recommendation["why"]


def test_exclude_keeps_named_layer_fp32(seg_run, tmp_path):
    fp32 = export(str(seg_run), tmp_path / "m.onnx", SEG, samples=2).path
    reader = ImageCalibrationReader(calibration_set(load_data(SEG)), 4, "input")
    q = quantize_ptq(fp32, tmp_path / "q.onnx", reader, exclude=["head"])
    graph = onnx.load(str(q)).graph
    producers = {o: n for n in graph.node for o in n.output}
    head = next(n for n in graph.node if n.op_type == "Conv" and "/head/" in n.name)
    body = next(n for n in graph.node if n.op_type == "Conv" and "/head/" not in n.name)
    assert head.input[1] not in producers  # the head reads its FP32 weight directly
    assert producers[body.input[1]].op_type == "DequantizeLinear"
    with pytest.raises(SlimcvError, match="No ONNX node matches the layer 'nosuchlayer'"):
        quantize_ptq(fp32, tmp_path / "q2.onnx", reader, exclude=["nosuchlayer"])


def test_dynamic_quantization_where_it_applies(tmp_path):
    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 256), nn.ReLU(), nn.Linear(256, 5))

        def forward(self, x):
            return self.net(x)

    torch.manual_seed(0)
    x = torch.randn(4, 3, 16, 16)
    fp32 = export_module(MLP(), tmp_path / "mlp.onnx", [x], task="classification", cfg=ExportConfig(), meta={}).path
    app = dynamic_applicability(fp32)
    assert app.ops == 2 and app.useful and app.weight_share > 0.99
    q = quantize_dyn(fp32, tmp_path / "mlp_dyn.onnx")
    assert q.stat().st_size < fp32.stat().st_size / 3
    a = ort.InferenceSession(str(fp32)).run(None, {"input": x.numpy()})[0]
    b = ort.InferenceSession(str(q)).run(None, {"input": x.numpy()})[0]
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max() + 1e-3
    conv = export_module(nn.Conv2d(3, 4, 3), tmp_path / "c.onnx", [x], task="segmentation", cfg=ExportConfig(),
                         meta={}).path
    assert not dynamic_applicability(conv).useful
    with pytest.raises(SlimcvError, match="dynamic quantization does not apply"):
        quantize_dyn(conv, tmp_path / "c_dyn.onnx")


def test_qat_round_trip_exports_real_int8(seg_run, tmp_path):
    from slimcv.cli import main

    rc = main(["quantize", str(seg_run), "-o", str(tmp_path / "qat"), "--calibration", "--qat-epochs", "1",
               "--latency-runs", "2", "--threads", "1", "--no-eager"])
    assert rc == 0
    info = json.loads((tmp_path / "qat" / "quantize.json").read_text())
    qat = next(m for m in info["models"] if m["name"] == "int8_qat")
    fp32 = next(m for m in info["models"] if m["name"] == "fp32")
    path = tmp_path / "qat" / qat["path"]
    graph = onnx.load(str(path)).graph
    weights = [i for i in graph.initializer if len(i.dims) == 4]  # convolutions and transposed convolutions
    assert len(weights) >= 5 and all(i.data_type == onnx.TensorProto.INT8 for i in weights)
    assert qat["file_bytes"] < fp32["file_bytes"]
    assert qat["metrics"]["miou"] > 0.5 * fp32["metrics"]["miou"]
    # ORT fuses the QDQ pattern into integer convolutions: the deployed model computes in INT8
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(path), opts)
    assert _ops(tmp_path / "opt.onnx")["QLinearConv"] >= 3


def test_qat_tracer_handles_size_branches():
    from slimcv.quantize.qat import freeze, prepare_qat

    torch.manual_seed(0)
    net = create_model("unet", 3, base_width=2, depth=2)
    qm = prepare_qat(net, torch.randn(1, 3, 32, 32))
    qm(torch.randn(2, 3, 32, 32))  # observers see data
    freeze(qm)
    x = torch.randn(1, 3, 30, 42)  # not a multiple of 4: the padding branch
    with torch.no_grad():
        assert qm(x).shape == (1, 3, 30, 42)


@pytest.mark.data
def test_ptq_on_real_cifar_subset_within_tolerance(cifar_root, tmp_path):
    from slimcv.engine.train import train

    data = {"spec": f"cifar10:{cifar_root}", "subset": 1024, "val_subset": 200, "batch_size": 64, "workers": 0}
    train({"model": "resnet8", "data": data, "epochs": 2, "optim": {"name": "sgd", "lr": 0.05},
           "out_dir": str(tmp_path / "run"), "progress": False, "tensorboard": False})
    r = quantize({"source": str(tmp_path / "run"), "data": data, "calibration_images": 32, "latency_runs": 2,
                  "eager": False, "out_dir": str(tmp_path / "q"), "progress": False})
    by = {m["name"]: m for m in r.models}
    assert by["fp32"]["metrics"]["top1"] > 15  # learnt something, so agreement is meaningful
    assert len(by["int8_minmax"]["metrics"]["confusion_matrix"]) == 10
    assert abs(by["int8_minmax"]["metrics"]["top1"] - by["fp32"]["metrics"]["top1"]) <= 3.0
    assert by["int8_minmax"]["file_bytes"] < by["fp32"]["file_bytes"] / 3


def test_one_dataset_serves_calibration_and_scoring(tmp_path, capsys):
    from torch.utils.data import TensorDataset

    import slimcv
    from slimcv.models import create_model

    torch.manual_seed(0)
    images, labels = torch.rand(12, 3, 32, 32), torch.arange(12) % 3
    q = slimcv.quantize(create_model("resnet8", 3), data=TensorDataset(images, labels), out_dir=tmp_path / "q",
                        nncf=False, latency_runs=1, progress=False)
    assert {m["name"] for m in q.models} >= {"fp32", "int8_minmax"}
    err = capsys.readouterr().err
    assert f"saved every model in {tmp_path / 'q'}" in err and f"slimcv serve {tmp_path / 'q'}" in err
    assert q.path.name in err  # the file serve and predict will load
