"""The runtime table: every runtime this machine has agrees with PyTorch FP32; the others say why they are absent."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from slimcv import hardware
from slimcv.deploy import runtimes
from slimcv.deploy.chooser import Candidate, choose_runtime
from slimcv.errors import SlimcvError
from slimcv.export import ExportConfig, export_module
from slimcv.models import create_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    net = create_model("unet", 3, base_width=4, depth=2).eval()
    x = torch.rand(2, 3, 32, 32)
    path = tmp_path_factory.mktemp("rt") / "m.onnx"
    export_module(net, path, [x], task="segmentation", cfg=ExportConfig(check=False), meta={"mean": [0] * 3,
                                                                                             "std": [1] * 3})
    with torch.no_grad():
        ref = net(x).numpy()
    return net, path, x.numpy(), ref


@pytest.mark.parametrize("name", list(runtimes.TABLE))
def test_every_available_runtime_matches_pytorch_fp32(tiny, name):
    rt = runtimes.TABLE[name]
    why = rt.check()
    if why:
        pytest.skip(f"{name}: {why}")
    net, path, x, ref = tiny
    out = runtimes.open_session(path if rt.runs == "onnx" else net, name, threads=1)(x)
    assert out.shape == ref.shape
    agree = (out.argmax(1) == ref.argmax(1)).mean()
    bf16 = runtimes.computes_in(name) == "bf16"  # OpenVINO's default on CPUs with native bf16
    assert agree > (0.97 if bf16 else 0.999), agree
    if bf16:
        np.testing.assert_allclose(out, ref, rtol=0.05, atol=0.05)
    else:
        np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-4)


def test_an_unavailable_runtime_says_why_and_is_refused(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert "no native bf16" in runtimes.TABLE["eager-bf16"].check()
    assert "eager-bf16" in runtimes.unavailable()
    with pytest.raises(SlimcvError, match="cannot run here: this CPU has no native bf16"):
        runtimes.open_session(torch.nn.Identity(), "eager-bf16")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert runtimes.TABLE["eager-bf16"].check() is None


def test_names_aliases_and_row_labels():
    assert runtimes.get("pytorch").name == "eager" and runtimes.get("onnxruntime").name == "ort"
    with pytest.raises(SlimcvError, match="Unknown runtime 'openvno'.*'openvino'"):
        runtimes.get("openvno")
    assert [runtimes.row_name("ort", "int8"), runtimes.row_name("eager", "fp32"), runtimes.row_name("openvino-f32", "fp32"),
            runtimes.row_name("eager-bf16", "fp32")] == ["ort-int8", "eager", "openvino-f32", "eager-bf16"]
    assert runtimes.available("module")[0].name == "eager"


def test_the_quantize_choice_is_reproduced_from_its_recorded_timings(tmp_path):
    import slimcv

    data = {"spec": "synthetic-shapes", "options": {"size": 32, "length": 16}, "batch_size": 8, "workers": 0}
    torch.manual_seed(0)
    net = create_model("unet", 4, base_width=2, depth=2)
    q = slimcv.quantize(net, data=data, out_dir=tmp_path / "q", latency_runs=3, progress=False)
    info = json.loads((tmp_path / "q" / "quantize.json").read_text())
    again = choose_runtime([Candidate(m["name"], m["metrics"]["miou"], m["latency_ms"]["median"], m["runtime"],
                                      m["precision"]) for m in info["models"]], info["config"]["max_drop"],
                           metric_name="miou")
    assert again.name == info["recommendation"]["name"] == q.recommendation["name"]
    assert info["cpu"]["model"] and "bf16" in info["cpu"] and info["threads"] >= 1
    assert {m["runtime"] for m in info["models"]} >= {"eager", "ort"}


def test_deploy_load_runs_what_quantize_chose_and_a_runtime_can_be_forced(tmp_path):
    import slimcv
    from slimcv import deploy

    data = {"spec": "synthetic-shapes", "options": {"size": 32, "length": 16}, "batch_size": 8, "workers": 0}
    torch.manual_seed(0)
    q = slimcv.quantize(create_model("unet", 4, base_width=2, depth=2), data=data, out_dir=tmp_path / "q",
                        latency_runs=3, progress=False)
    p = deploy.load(tmp_path / "q")
    chosen = q.recommended
    assert p.path == q.path and (p.runtime == chosen["runtime"] or chosen["runtime"].startswith("eager"))
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    ref = deploy.load(tmp_path / "q" / "model_fp32.onnx")(image).mask
    for rt in runtimes.available("onnx"):  # predictor parity per runtime on the FP32 file
        assert (deploy.load(tmp_path / "q" / "model_fp32.onnx", runtime=rt.name)(image).mask == ref).mean() > 0.99
    with pytest.raises(SlimcvError, match="runs PyTorch modules"):
        deploy.load(tmp_path / "q" / "model_fp32.onnx", runtime="eager")


def test_openvino_sessions_closed_out_of_order_leave_the_process_able_to_handle_signals(tiny, tmp_path):
    """OpenVINO sessions opened and dropped in any order, then a child process exits under a Python SIGCHLD
    handler (the one torch's DataLoader installs): the process must live. Run in a child so a crash is a failure,
    not the end of the test run."""
    pytest.importorskip("openvino")
    _, path, _, _ = tiny
    other = tmp_path / "other.onnx"
    other.write_bytes(path.read_bytes())
    code = f"""
import gc, signal, subprocess, sys
import numpy as np
from slimcv import hardware
from slimcv.deploy import runtimes
signal.signal(signal.SIGCHLD, lambda *a: None)
a = runtimes.open_session({str(path)!r}, "openvino", 1)
b = runtimes.open_session({str(other)!r}, "openvino-f32", 1)
a(np.zeros((1, 3, 32, 32), np.float32)); b(np.zeros((1, 3, 32, 32), np.float32))
del a; gc.collect()
del b; gc.collect()
for _ in range(3):
    assert subprocess.run([sys.executable, "-c", "pass"]).returncode == 0
print("alive")
"""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "alive", (out.returncode, out.stderr[-1000:])


def _onnx(path, net, example, **kwargs):
    torch.onnx.export(net, example, str(path), dynamo=False, **kwargs)
    return path


class _TwoInputs(torch.nn.Module):
    def forward(self, a, b):
        return a + b


class _Nan(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.conv(x) * float("nan")


def test_onnx_files_slimcv_cannot_feed_are_refused_in_one_sentence(tmp_path):
    import warnings

    from slimcv.deploy.deployed import DeployedModule
    from slimcv.errors import SlimcvError

    warnings.simplefilter("ignore")
    two = _onnx(tmp_path / "two.onnx", _TwoInputs(), (torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)),
                input_names=["a", "b"])
    grey = _onnx(tmp_path / "grey.onnx", torch.nn.Conv2d(1, 2, 1), (torch.rand(1, 1, 8, 8),))
    nan = _onnx(tmp_path / "nan.onnx", _Nan(), (torch.rand(1, 3, 8, 8),))
    with pytest.raises(SlimcvError, match=r"has 2 inputs \(a, b\)"):
        runtimes.open_session(two, "ort")
    with pytest.raises(SlimcvError, match="takes 1-channel images but slimcv feeds RGB"):
        DeployedModule(grey)
    scored = DeployedModule(nan)
    with pytest.raises(SlimcvError, match="NaN or infinite outputs"):
        scored(torch.zeros(1, 3, 8, 8))


def test_an_old_opset_is_named_with_how_to_upgrade_it(tmp_path):
    import warnings

    from torch.utils.data import TensorDataset

    import slimcv
    from slimcv.errors import SlimcvError

    warnings.simplefilter("ignore")
    old = _onnx(tmp_path / "old.onnx", torch.nn.Conv2d(3, 2, 1), (torch.rand(1, 3, 8, 8),), opset_version=11)
    data = TensorDataset(torch.rand(4, 3, 8, 8), torch.randint(0, 2, (4, 8, 8)))
    with pytest.raises(SlimcvError, match=r"opset 11; INT8 quantization needs opset 13 .*convert_version"):
        slimcv.quantize(str(old), data=data, out_dir=tmp_path / "q", progress=False)


def test_a_gpu_session_runs_a_copy_so_cpu_rows_keep_their_module_on_the_cpu():
    # `bench --runtimes eager eager-cuda` crashed: the CUDA session moved the shared module to the GPU, and the
    # CPU row then fed it CPU inputs. The meta device stands in for the GPU here (no data, no CUDA needed).
    from slimcv.bench.latency import eager_runner

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    runtimes._torch(None, "meta")(net, None)
    assert next(net.parameters()).device.type == "cpu"
    assert eager_runner(net, torch.zeros(1, 3, 8, 8))().shape == (1, 4, 6, 6)
    moved = net.to("meta")  # a module that does live elsewhere gets its inputs moved there
    assert eager_runner(moved, torch.zeros(1, 3, 8, 8))().device.type == "meta"


def test_a_onednn_cap_below_bf16_keeps_openvino_in_fp32(monkeypatch):
    # ONEDNN_MAX_CPU_ISA (set to avoid AMX, or to behave like an older CPU) holds oneDNN below its bf16 kernels:
    # OpenVINO would still pick bf16 from the CPU's flags and fail to compile, so slimcv asks it for FP32
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16", "amx_bf16"}))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert hardware.native_bf16() and runtimes.openvino_config(None, 1) == {"INFERENCE_NUM_THREADS": 1}
    assert runtimes.computes_in("openvino") == "bf16"
    for cap in ("AVX2", "avx512_core_vnni", "SSE41"):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert not hardware.native_bf16() and runtimes.computes_in("openvino") == "fp32"
        assert runtimes.openvino_config(None, None) == {"INFERENCE_PRECISION_HINT": "f32"}
        assert "ONEDNN_MAX_CPU_ISA" in runtimes.get("eager-bf16").check()
    for cap in ("AVX512_CORE_BF16", "AVX512_CORE_AMX", "ALL"):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert hardware.native_bf16() and "INFERENCE_PRECISION_HINT" not in runtimes.openvino_config(None, 2)
    assert runtimes.openvino_config("f32", 2)["INFERENCE_PRECISION_HINT"] == "f32"  # an explicit hint is kept


def test_openvino_compiles_under_a_onednn_cap_below_bf16(tmp_path):
    pytest.importorskip("openvino")
    import os
    import subprocess
    import sys

    onnx = tmp_path / "m.onnx"
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ConvTranspose2d(8, 4, 2, stride=2))  # in bf16 under the cap: no kernel
    torch.onnx.export(model.eval(), torch.randn(1, 3, 16, 16), onnx, dynamo=False)
    code = (f"import numpy as np; from slimcv.deploy import runtimes; "
            f"s = runtimes.open_session({str(onnx)!r}, 'openvino', 1); "
            "print(s(np.zeros((1, 3, 16, 16), np.float32)).shape)")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}  # oneDNN reads it once, at load: a new process
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "(1, 4, 32, 32)" in out.stdout
