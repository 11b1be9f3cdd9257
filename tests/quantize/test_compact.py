"""Compacting an INT8 QDQ file: fewer bytes, the same operators and bit-identical outputs."""
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import torch

import slimcv
from slimcv.quantize.compact import compact_onnx


def test_compaction_shrinks_the_file_and_keeps_the_outputs(tmp_path):
    torch.manual_seed(0)
    data = {"spec": "synthetic-shapes:classification", "options": {"size": 32, "length": 32}, "batch_size": 8,
            "workers": 0}
    q = slimcv.quantize(slimcv.create_model("resnet20", 3), data=data, out_dir=tmp_path / "q", latency_runs=2,
                        eager=False, progress=False)
    int8 = tmp_path / "q" / "model_int8_minmax.onnx"  # already compacted by quantize
    fp32 = tmp_path / "q" / "model_fp32.onnx"
    assert fp32.stat().st_size / int8.stat().st_size > 3.5, [m["file_bytes"] for m in q.models]
    # compacting the (uncompacted) FP32 export shows what it removes and that nothing else changes
    copy = tmp_path / "copy.onnx"
    shutil.copyfile(fp32, copy)
    compact_onnx(copy)
    assert copy.stat().st_size < fp32.stat().st_size
    a, b = onnx.load(str(fp32)), onnx.load(str(copy))
    assert [n.op_type for n in a.graph.node] == [n.op_type for n in b.graph.node]
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]  # noqa: E731
    assert np.array_equal(run(fp32), run(copy))
