"""ONNX export: agreement with PyTorch in ONNX Runtime on each model family, a pruned model, dynamic sizes, errors."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import slimcv
from slimcv.data import load_data
from slimcv.errors import SlimcvError
from slimcv.export import ExportConfig, export, export_module
from slimcv.models import create_model

SEG = {"spec": "synthetic-shapes", "options": {"size": 40, "length": 8}, "workers": 0}
CLS = {"spec": "synthetic-shapes:classification", "options": {"size": 32, "length": 8}, "workers": 0}


@pytest.mark.parametrize("name,kwargs,data", [
    ("unet", {"base_width": 2, "depth": 3}, SEG),
    ("resnet8", {}, CLS),
    ("mobilenet_v3_small", {}, CLS),
    ("lraspp_mobilenet_v3_large", {}, SEG),
])
def test_export_agrees_with_pytorch_on_each_family(name, kwargs, data, tmp_path):
    bundle = load_data(data)
    torch.manual_seed(0)
    net = create_model(name, bundle.num_classes, **kwargs)
    r = export(net, tmp_path / "m.onnx", bundle, samples=6)
    a = r.agreement
    assert a.samples == 6 and a.source == "real" and a.argmax_agreement >= 0.999
    assert a.max_abs_diff <= 1e-4 + 1e-3 * a.max_abs_logit
    meta = json.loads(r.sidecar.read_text())
    assert meta["task"] == bundle.task and meta["class_names"] == list(bundle.info.class_names)
    assert meta["opset"] == 17 and r.file_bytes == (tmp_path / "m.onnx").stat().st_size


def test_pruned_run_folder_exports(tmp_path):
    from slimcv.prune.structured import prune_structured, save_pruned

    torch.manual_seed(0)
    net = create_model("unet", 4, base_width=4, depth=3)
    x = torch.randn(1, 3, 40, 40)
    result = prune_structured(net, x, num_classes=4, ratio=0.5)
    spec = {"name": "unet", "num_classes": 4, "kwargs": {"base_width": 4, "depth": 3}, "task": "segmentation"}
    save_pruned(net, spec, result, tuple(x.shape), tmp_path / "pruned")
    r = export(str(tmp_path / "pruned"), tmp_path / "p.onnx", SEG, samples=4)
    assert r.agreement.argmax_agreement >= 0.999
    full = export(create_model("unet", 4, base_width=4, depth=3), tmp_path / "f.onnx", SEG, samples=1, check=False)
    assert r.file_bytes < 0.6 * full.file_bytes  # the replayed pruning history shrank the exported file


def test_dynamic_height_width_survive_size_branches(tmp_path):
    # The U-Net pads sizes that are not multiples of 2**depth: the export must hold for any size.
    import onnxruntime as ort

    torch.manual_seed(0)
    net = create_model("unet", 3, base_width=2, depth=3).eval()
    r = export_module(net, tmp_path / "u.onnx", [torch.randn(2, 3, 32, 48)], task="segmentation",
                      cfg=ExportConfig(), meta={})
    session = ort.InferenceSession(str(r.path))
    for shape in [(1, 3, 45, 61), (3, 3, 64, 64)]:
        x = torch.randn(*shape)
        out = session.run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            assert np.abs(out - net(x).numpy()).max() < 1e-4


def test_static_batch_and_size(tmp_path):
    bundle = load_data(CLS)
    r = export(create_model("resnet8", bundle.num_classes), tmp_path / "s.onnx", bundle, batch=2, samples=3)
    dims = onnx.load(str(r.path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [2, 3, 32, 32] and r.agreement.samples == 2


def test_simplify_keeps_agreement(tmp_path):
    bundle = load_data(CLS)
    r = export(create_model("resnet8", bundle.num_classes), tmp_path / "s.onnx", bundle, simplify=True, samples=2)
    assert r.agreement.argmax_agreement == 1.0


def test_disagreement_fails_loudly(tmp_path):
    class DataDependent(nn.Module):  # tracing bakes in the branch the first sample takes
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            y = self.fc(x.mean((2, 3)))
            return y if x.mean() > 0 else -y

    batches = [torch.ones(1, 4, 8, 8), -torch.ones(1, 4, 8, 8)]
    with pytest.raises(SlimcvError, match="disagrees with PyTorch"):
        export_module(DataDependent(), tmp_path / "d.onnx", batches, task="classification", cfg=ExportConfig(),
                      meta={})


def test_unsupported_operator_and_opset_are_clear_errors(tmp_path):
    class Cummax(nn.Module):
        def forward(self, x):
            return torch.cummax(x, 1)[0].mean((2, 3))

    x = [torch.randn(1, 3, 8, 8)]
    with pytest.raises(SlimcvError, match="cummax.*try a higher --opset"):
        export_module(Cummax(), tmp_path / "c.onnx", x, task="classification", cfg=ExportConfig(), meta={})
    with pytest.raises(SlimcvError, match="opset 9 is not supported"):
        export_module(Cummax(), tmp_path / "c.onnx", x, task="classification", cfg=ExportConfig(opset=9), meta={})
    assert not (tmp_path / "c.onnx").exists()


def test_public_api_and_cli(tmp_path):
    from slimcv.cli import main

    assert slimcv.export is not None and callable(slimcv.export)
    rc = main(["export", "resnet8", "--data", "synthetic-shapes:classification", "-o", str(tmp_path / "c.onnx"),
               "--static-batch", "1"])
    assert rc == 0 and (tmp_path / "c.onnx.json").is_file()
    assert main(["export", "resnet8", "--data", "synthetic-shapes:classification", "--opset", "8"]) == 2


@pytest.mark.data
def test_real_camvid_and_cifar_samples(camvid_root, cifar_root, tmp_path):
    camvid = load_data({"spec": f"camvid:{camvid_root}", "eval_size": [88, 120], "val_subset": 2, "workers": 0})
    r = export(create_model("unet", 11, base_width=2, depth=3), tmp_path / "cv.onnx", camvid, samples=2)
    assert r.agreement.shapes == ((2, 3, 88, 120),) and r.agreement.argmax_agreement >= 0.999
    cifar = load_data({"spec": f"cifar10:{cifar_root}", "val_subset": 4, "workers": 0})
    r = export(create_model("resnet8", 10), tmp_path / "c.onnx", cifar, samples=4)
    assert r.agreement.samples == 4 and r.meta["class_names"][0] == "airplane"
