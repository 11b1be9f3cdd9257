import json
import warnings

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from slimcv.bench.bench import BenchReport, bench
from slimcv.bench.macs import count_macs
from slimcv.bench.memory import peak_memory_mb
from slimcv.bench.size import onnx_summary
from slimcv.errors import SlimcvError

ort = pytest.importorskip("onnxruntime")


def _convs(width: int, depth: int) -> nn.Module:
    layers = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU()]
    for _ in range(depth):
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers)


def _to_onnx(model: nn.Module, path, size=32, batch=None):
    axes = None if batch else {"input": {0: "batch"}, "output": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, as slimcv.export uses
        torch.onnx.export(model.eval(), (torch.randn(batch or 1, 3, size, size),), str(path), dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["output"], dynamic_axes=axes)
    return path


def test_resnet18_macs_match_the_published_count():
    # torchvision resnet18 at 224x224: 1.814 GMACs (the "1.82 GFLOPs" of the literature counts MACs)
    macs = count_macs(torchvision.models.resnet18(weights=None), (1, 3, 224, 224))
    assert macs == pytest.approx(1.814e9, rel=0.005)


def test_macs_of_a_conv_and_a_linear_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(16 * 8 * 8, 10))
    by_hand = 16 * 3 * 9 * 8 * 8 + 16 * 8 * 8 * 10
    assert count_macs(model, (1, 3, 8, 8)) == by_hand
    assert count_macs(model, (4, 3, 8, 8)) == 4 * by_hand


def test_bench_json_follows_the_schema_and_measures_every_runtime(tmp_path):
    onnx_path = _to_onnx(_convs(8, 1), tmp_path / "small.onnx")
    report = bench([_convs(8, 1), onnx_path], input_size=(32, 32), batch_sizes=(1, 2), warmup=1, runs=4, threads=1,
                   out=tmp_path / "bench.json", quiet=True, runtimes=["eager", "ort"])
    saved = json.loads((tmp_path / "bench.json").read_text())
    parsed = BenchReport.model_validate(saved)  # the documented schema, extra keys forbidden
    assert saved["schema"] == "slimcv.bench/1" and parsed.settings.threads == 1
    module, onnx_model = parsed.models
    assert [r.runtime for r in module.runtimes] == ["eager", "ort-fp32"]
    assert [r.runtime for r in onnx_model.runtimes] == ["ort-fp32"]
    assert module.params == onnx_model.params == sum(p.numel() for p in _convs(8, 1).parameters())
    assert module.macs == count_macs(_convs(8, 1), (1, 3, 32, 32)) and module.flops == 2 * module.macs
    assert onnx_model.macs is None  # a bare ONNX file has no counter
    for r in module.runtimes + onnx_model.runtimes:
        assert set(r.throughput) == {"1", "2"}
        assert r.throughput["2"] == pytest.approx(2e3 / r.batch_latency_ms["2"].median)
        assert r.latency_ms.p90 >= r.latency_ms.median > 0 and r.latency_ms.runs == 4
    assert module.runtimes[0].speedup == 1.0 and module.runtimes[0].peak_memory_mb is None  # in-memory module
    assert onnx_model.runtimes[0].peak_memory_mb is not None and onnx_model.runtimes[0].peak_memory_mb > 0
    assert report.models[1].file_bytes == onnx_path.stat().st_size


def test_by_default_every_runtime_this_cpu_can_run_is_timed(tmp_path):
    from slimcv.deploy import runtimes as table

    onnx_path = _to_onnx(_convs(8, 1), tmp_path / "small.onnx")
    report = bench([_convs(8, 1), onnx_path], input_size=(32, 32), batch_sizes=(1,), warmup=1, runs=2, threads=1,
                   memory=False, quiet=True)
    module, onnx_model = report.models
    for rt in table.available():
        if rt.device != "cpu":
            continue
        labels = [r.runtime for r in (module if rt.runs == "module" else onnx_model).runtimes]
        assert any(label == rt.name or label.startswith(rt.name + "-") for label in labels), (rt.name, labels)


def test_twice_the_work_is_slower_in_every_runtime():
    small, big = _convs(16, 1), _convs(16, 5)
    report = bench([small, big], input_size=32, batch_sizes=(1,), warmup=2, runs=15, threads=1, memory=False,
                   quiet=True)
    s, b = ({r.runtime: r.latency_ms.median for r in m.runtimes} for m in report.models)
    assert report.models[1].macs > 3 * report.models[0].macs
    for runtime in ("eager", "ort-fp32"):
        assert b[runtime] > 1.5 * s[runtime], (runtime, s, b)


def test_int8_onnx_is_measured_as_ort_int8_with_the_fp32_parameter_count(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    fp32 = _to_onnx(_convs(16, 2), tmp_path / "fp32.onnx", batch=1)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": np.random.rand(1, 3, 32, 32).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(fp32), str(tmp_path / "int8.onnx"), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    a, b = onnx_summary(fp32), onnx_summary(tmp_path / "int8.onnx")
    assert (a["precision"], b["precision"]) == ("fp32", "int8")
    assert a["params"] == b["params"] and a["input_shape"] == [1, 3, 32, 32]
    report = bench([tmp_path / "int8.onnx"], batch_sizes=(1, 4), warmup=1, runs=3, threads=1, memory=False, quiet=True)
    (m,) = report.models
    assert m.runtimes[0].runtime == "ort-int8" and m.precision == "int8"
    assert set(m.runtimes[0].throughput) == {"1"}  # a file exported for batch 1 is not run at batch 4
    assert m.file_bytes < (tmp_path / "fp32.onnx").stat().st_size


def test_peak_memory_grows_with_the_activations(tmp_path):
    small = _to_onnx(_convs(4, 1), tmp_path / "small.onnx", size=256, batch=1)
    big = _to_onnx(_convs(64, 1), tmp_path / "big.onnx", size=256, batch=1)
    spec = {"runtime": "ort", "input_shape": [1, 3, 256, 256], "threads": 1, "runs": 2}
    m_small = peak_memory_mb({**spec, "source": str(small)})
    m_big = peak_memory_mb({**spec, "source": str(big)})
    # two 64x256x256 float32 maps are 32 MiB; the 4-channel net needs a sixteenth of that
    assert m_small is not None and m_big is not None
    assert m_big > m_small + 16


def test_bench_errors_are_one_sentence(tmp_path):
    with pytest.raises(SlimcvError, match="Unknown runtime"):
        bench([_convs(4, 1)], input_size=32, runtimes=["tensorrt"], quiet=True)
    with pytest.raises(SlimcvError, match="--input-size"):
        bench(["resnet18"], quiet=True)
    with pytest.raises(SlimcvError, match="does not exist"):
        bench([str(tmp_path / "missing.onnx")], quiet=True)
    with pytest.raises(SlimcvError, match="input_size=\\(H, W\\)"):
        bench([_convs(4, 1)], quiet=True)
    with pytest.raises(SlimcvError, match="neither a run folder nor an .onnx file"):
        bench([str(tmp_path / "nothing_here" / "x.pt2")], quiet=True)
