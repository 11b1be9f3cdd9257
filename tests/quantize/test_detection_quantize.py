"""A detector quantized as deployed: its static network in INT8, box decoding kept in FP32, scored by mAP."""
from __future__ import annotations

import onnx
import pytest

import slimcv
from slimcv.deploy import runtimes
from slimcv.export import export
from slimcv.quantize.ptq import tail_nodes


@pytest.fixture
def run(tiny_detector_run):
    return tiny_detector_run


def test_the_decoding_after_the_last_convolution_is_the_float_tail(run, tmp_path):
    path = export(run, tmp_path / "m.onnx").path
    model = onnx.load(str(path))
    tail = set(tail_nodes(model))
    last = next(n for n in model.graph.node if "detections" in n.output)  # the output concatenation
    assert last.name in tail and not [n for n in model.graph.node if n.name in tail and n.op_type == "Conv"]
    assert any(n.op_type == "Sigmoid" and n.name in tail for n in model.graph.node)


def test_a_detector_is_quantized_and_every_file_scored_by_map_as_deployed(run, tmp_path):
    q = slimcv.quantize(str(run), out_dir=str(tmp_path / "q"), calibration=["minmax"], calibration_images=8,
                        latency_runs=2, progress=False)
    rows = {m["name"]: m for m in q.models}
    assert "int8_minmax" in rows and all("map" in m["metrics"] and "map50" in m["metrics"] for m in q.models)
    assert rows["int8_minmax"]["file_bytes"] * 2 < rows["fp32"]["file_bytes"]
    if runtimes.get(runtimes.OPENVINO).available:
        assert "int8_nncf_openvino" in rows
    # the box output stays in FP32: the INT8 file's last node reads no dequantized tensor
    model = onnx.load(str(tmp_path / "q" / rows["int8_minmax"]["path"]))
    producers = {o: n for n in model.graph.node for o in n.output}
    last = producers[model.graph.output[0].name]
    assert last.op_type == "Concat" and all(producers[i].op_type != "DequantizeLinear" for i in last.input)
    picked = slimcv.deploy.load(tmp_path / "q")  # the folder serves what it recommends, boxes selected as recorded
    assert picked.task == "detection" and picked.selection.levels
