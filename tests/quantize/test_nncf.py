"""OpenVINO INT8 by NNCF beside slimcv's QDQ files: built, scored and timed in OpenVINO, deployable, optional."""
from __future__ import annotations

import json

import numpy as np
import pytest

from slimcv import deploy
from slimcv.bench.bench import bench
from slimcv.deploy import runtimes
from slimcv.errors import SlimcvError
from slimcv.quantize import nncf_ptq
from slimcv.quantize.quantize import quantize
from tests.quantize.test_quantize import SEG, seg_run  # noqa: F401  (the module's trained tiny U-Net)

needs_nncf = pytest.mark.skipif(nncf_ptq.unavailable() is not None, reason=f"NNCF INT8: {nncf_ptq.unavailable()}")


@pytest.fixture(scope="module")
def quantized(seg_run, tmp_path_factory):  # noqa: F811
    if nncf_ptq.unavailable():
        pytest.skip(f"NNCF INT8: {nncf_ptq.unavailable()}")
    out = tmp_path_factory.mktemp("nncf") / "q"
    quantize({"source": str(seg_run), "data": SEG, "calibration": ["minmax"], "calibration_images": 16,
              "latency_runs": 3, "out_dir": str(out), "threads": 1, "progress": False, "eager": False})
    return out, {m["name"]: m for m in json.loads((out / "quantize.json").read_text())["models"]}


@needs_nncf
def test_nncf_int8_is_scored_and_timed_in_openvino_only(quantized):
    out, by = quantized
    nncf_rows = {n for n in by if n.startswith("int8_nncf")}
    assert nncf_rows == {"int8_nncf_openvino"}  # ONNX Runtime cannot read an IR; forced-FP32 OpenVINO is for FP32
    row = by["int8_nncf_openvino"]
    assert row["path"] == "model_int8_nncf.xml" and row["precision"] == "int8" and row["runtime"] == "openvino"
    xml, binary = out / "model_int8_nncf.xml", out / "model_int8_nncf.bin"
    assert row["file_bytes"] == xml.stat().st_size + binary.stat().st_size
    assert "FakeQuantize" in xml.read_text()  # INT8 as OpenVINO runs it
    assert abs(row["metrics"]["miou"] - by["fp32"]["metrics"]["miou"]) < 5.0 and row["latency_ms"]["median"] > 0
    side = json.loads((out / "model_int8_nncf.xml.json").read_text())
    assert side["calibration"] == "nncf" and side["calibration_images"] == 16 and side["task"] == "segmentation"


@needs_nncf
def test_the_nncf_file_deploys_in_openvino_and_ort_refuses_it(quantized):
    out, _ = quantized
    predictor = deploy.load(out / "model_int8_nncf.xml")
    assert predictor.runtime == "openvino"
    reference = deploy.load(out / "model_fp32.onnx")
    image = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    assert (predictor(image).mask == reference(image).mask).mean() > 0.9
    with pytest.raises(SlimcvError, match="cannot read .*model_int8_nncf.xml.*runtime 'openvino'"):
        deploy.load(out / "model_int8_nncf.xml", runtime="ort")


@needs_nncf
def test_bench_measures_the_nncf_file_of_a_quantize_folder(quantized):
    out, _ = quantized
    report = bench([str(out)], runtimes=["ort", "openvino"], runs=3, warmup=1, batch_sizes=[1], memory=False)
    rows = {(m.name, r.runtime) for m in report.models for r in m.runtimes}
    assert (f"{out.name}:int8_nncf_openvino", "openvino-int8") in rows
    assert not any(name.endswith("int8_nncf_openvino") and rt.startswith("ort") for name, rt in rows)


def test_without_openvino_or_nncf_quantize_notes_it_and_builds_the_rest(seg_run, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(nncf_ptq, "unavailable", lambda: "nncf not installed (pip install 'slimcv[openvino]')")
    q = quantize({"source": str(seg_run), "data": SEG, "calibration": ["minmax"], "calibration_images": 8,
                  "latency_runs": 2, "out_dir": str(tmp_path / "q"), "threads": 1, "progress": False, "eager": False})
    assert not any(m["name"].startswith("int8_nncf") for m in q.models)
    assert any(n.startswith("NNCF INT8 not built: nncf not installed") for n in q.notes)
    assert {m["name"] for m in q.models} >= {"fp32", "int8_minmax"}


def test_no_nncf_option_leaves_it_out(seg_run, tmp_path):  # noqa: F811
    q = quantize({"source": str(seg_run), "data": SEG, "calibration": [], "nncf": False, "latency_runs": 2,
                  "out_dir": str(tmp_path / "q"), "threads": 1, "progress": False, "eager": False})
    assert {m["precision"] for m in q.models} == {"fp32"} and not (tmp_path / "q" / "model_int8_nncf.xml").exists()
    assert all(runtimes.reads(m["runtime"], m["path"]) for m in q.models)


@needs_nncf
def test_fp32_ends_keep_the_first_and_last_layers_out_of_int8(seg_run, tmp_path):  # noqa: F811
    import onnx
    import openvino as ov

    quantize({"source": str(seg_run), "data": SEG, "calibration": ["minmax"], "calibration_images": 8,
              "latency_runs": 1, "out_dir": str(tmp_path / "q"), "threads": 1, "progress": False, "eager": False,
              "fp32_ends": True})
    graph = onnx.load(str(tmp_path / "q" / "model_int8_minmax.onnx")).graph
    producers = {o: n for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert convs[0].input[1] not in producers and convs[-1].input[1] not in producers  # FP32 weights
    assert any(producers.get(n.input[1]) is not None for n in convs[1:-1])  # the rest is INT8
    ir = ov.Core().read_model(str(tmp_path / "q" / "model_int8_nncf.xml"))
    weighted = [op for op in ir.get_ordered_ops() if op.get_type_name() in ("Convolution", "ConvolutionBackpropData")]
    fed = [op.input_value(0).get_node().get_type_name() == "FakeQuantize" for op in weighted]
    assert fed[0] is False and fed[-1] is False and any(fed[1:-1])
    side = json.loads((tmp_path / "q" / "model_int8_nncf.xml.json").read_text())
    fp32 = [n.name for n in onnx.load(str(tmp_path / "q" / "model_fp32.onnx")).graph.node
            if n.op_type in ("Conv", "ConvTranspose")]
    assert side["exclude"] == sorted([fp32[0], fp32[-1]])


@needs_nncf
def test_layers_kept_in_fp32_are_found_in_openvino_under_their_output_names_too(tmp_path):
    import onnx
    import openvino as ov
    import torch
    from torch import nn

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1, bias=False)).eval()
    torch.onnx.export(net, torch.randn(1, 3, 8, 8), tmp_path / "m.onnx", input_names=["input"],
                      output_names=["scores"], dynamo=False)
    nodes = [n.name for n in onnx.load(str(tmp_path / "m.onnx")).graph.node if n.op_type == "Conv"]
    model = ov.Core().read_model(str(tmp_path / "m.onnx"))
    found = nncf_ptq.ov_names(model, nncf_ptq._with_outputs(str(tmp_path / "m.onnx"), nodes))
    kinds = {op.get_type_name() for op in model.get_ordered_ops() if op.get_friendly_name() in found}
    convs = [op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    assert len(convs) == 2 and all(op.get_friendly_name() in found for op in convs)  # the last one is "scores"
    assert kinds <= {"Convolution", "Add"}
