"""Dynamic quantization with ONNX Runtime: INT8 weights, activations quantized at run time, for MatMul/Gemm layers.

Convolutions are left alone: ORT's dynamic ConvInteger is slower than its FP32 convolution on CPUs, so pure
conv nets gain (almost) nothing; :func:`dynamic_applicability` says so before any file is written.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from slimcv._io import atomic_write
from slimcv.errors import SlimcvError
from slimcv.quantize.ptq import pre_process

DYNAMIC_OPS = ("MatMul", "Gemm")


@dataclass(frozen=True)
class Applicability:
    """How much of a model's weight dynamic quantization can touch."""

    ops: int
    weight_share: float
    note: str

    @property
    def useful(self) -> bool:
        return self.ops > 0 and self.weight_share >= 0.05


def dynamic_applicability(path: str | Path) -> Applicability:
    """Count MatMul/Gemm nodes with constant weights and their share of all weight elements."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i).size for i in model.graph.initializer}
    total = sum(v for v in inits.values()) or 1
    hit = [n for n in model.graph.node if n.op_type in DYNAMIC_OPS and any(i in inits for i in n.input[1:2])]
    share = sum(inits[n.input[1]] for n in hit) / total
    if not hit:
        note = "no MatMul/Gemm layers: dynamic quantization does not apply to this pure conv net; use static PTQ or QAT"
    elif share < 0.05:
        note = (f"only {100 * share:.1f}% of the weights are in {len(hit)} MatMul/Gemm layer(s): dynamic quantization "
                "barely changes size or speed of this conv net; use static PTQ or QAT")
    else:
        note = f"{len(hit)} MatMul/Gemm layer(s) hold {100 * share:.0f}% of the weights"
    return Applicability(len(hit), share, note)


def quantize_dyn(fp32: str | Path, out: str | Path, *, per_channel: bool = True, reduce_range: bool = True) -> Path:
    """Write a dynamically quantized copy of ``fp32`` (INT8 MatMul/Gemm weights) to ``out``."""
    if dynamic_applicability(fp32).ops == 0:
        raise SlimcvError(f"{fp32} has no MatMul/Gemm layers, so dynamic quantization does not apply; "
                          "use static PTQ (--calibration) or --qat instead.")
    try:
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            pre = Path(tmp) / "pre.onnx"
            pre_process(fp32, pre)
            atomic_write(out, lambda p: quantize_dynamic(str(pre), p, op_types_to_quantize=list(DYNAMIC_OPS),
                                                         per_channel=per_channel, reduce_range=reduce_range,
                                                         weight_type=QuantType.QInt8))
    except Exception as e:
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise SlimcvError(f"ONNX Runtime dynamic quantization of {fp32} failed ({first}).") from e
    return Path(out)
