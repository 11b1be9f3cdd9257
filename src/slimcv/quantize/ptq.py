"""Static INT8 post-training quantization with ONNX Runtime: QDQ format, per-channel weights, calibrated on real images.

``reduce_range=True`` is the default: on CPUs without VNNI (AVX2 only) ONNX Runtime's u8s8 convolution kernels
saturate with full-range int8 weights, which cost several mIoU points on a U-Net; 7-bit weights lost about 0.1
(FINDINGS.md). On VNNI / AMX CPUs it can be turned off.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Sequence
from pathlib import Path

import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

from slimcv._io import atomic_write
from slimcv.errors import SlimcvError, close_matches

METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}
QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def quantize_ptq(fp32: str | Path, out: str | Path, reader: CalibrationDataReader, *, method: str = "minmax",
                 per_channel: bool = True, reduce_range: bool = True, exclude: Sequence[str] = (),
                 percentile: float = 99.999, float_tail: bool = False) -> Path:
    """Write an INT8 QDQ copy of ``fp32`` to ``out``, calibrated on ``reader`` with ``method``; ``float_tail`` keeps
    everything after the last convolution in FP32 (a detector's box decoding and scores)."""
    if method not in METHODS:
        raise SlimcvError(f"Unknown calibration method {method!r}; choose one of {list(METHODS)}."
                          + close_matches(method, METHODS))
    model = onnx.load(str(fp32))
    nodes = resolve_exclude(model, exclude)
    extra = {"CalibPercentile": percentile} if method == "percentile" else {}
    if hasattr(reader, "rewind"):
        reader.rewind()
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        pre_process(fp32, pre)
        if float_tail:
            nodes = sorted(set(nodes) | set(tail_nodes(onnx.load(str(pre)))))
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                atomic_write(out, lambda p: quantize_static(
                    str(pre), p, reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=METHODS[method], nodes_to_exclude=nodes, op_types_to_quantize=None,
                    extra_options=extra))
        except SlimcvError:
            raise
        except Exception as e:
            raise SlimcvError(f"ONNX Runtime static quantization of {fp32} failed ({str(e).splitlines()[0][:200]}); "
                              "check the calibration images match the model input.") from e
    return Path(out)


def tail_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes after the last quantizable layer (no convolution or matmul downstream): a detector's
    box decoding, sigmoids and output concatenation, where boxes in pixels and scores in [0, 1] would otherwise
    share one INT8 scale."""
    nodes = list(model.graph.node)
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    feeds = [False] * len(nodes)
    for i in reversed(range(len(nodes))):  # ONNX graphs are topologically sorted: consumers come later
        feeds[i] = any(nodes[c].op_type in QUANTIZED_OPS or feeds[c] for out in nodes[i].output
                       for c in consumers.get(out, []))
    return [n.name for n, f in zip(nodes, feeds) if n.name and n.op_type not in QUANTIZED_OPS and not f]


def end_layers(model: onnx.ModelProto) -> list[str]:
    """Names of the first and the last convolution or linear layer: the one that reads the image and the one that
    writes the scores, where INT8 costs most accuracy and least time."""
    layers = [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS and n.name]
    return sorted({layers[0], layers[-1]}) if layers else []


def resolve_exclude(model: onnx.ModelProto, names: Sequence[str]) -> list[str]:
    """ONNX node names to keep in FP32: exact node names, or module paths such as ``head`` or ``layer1.0.conv1``."""
    nodes = [n.name for n in model.graph.node]
    picked: list[str] = []
    for name in names:
        hits = [n for n in nodes if n == name or f"/{name}/" in n or n.startswith(f"/{name.replace('.', '/')}/")]
        if not hits:
            convs = [n for n in nodes if any(n.endswith(f"/{op}") for op in QUANTIZED_OPS)][:5]
            raise SlimcvError(f"No ONNX node matches the layer {name!r} to keep in FP32; give a module path "
                              f"(e.g. 'head') or a node name such as {convs}.")
        picked += hits
    return sorted(set(picked))


def pre_process(src: str | Path, dst: Path) -> None:
    """ORT's recommended pre-processing (shape inference, graph optimisation) before quantization."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    except Exception:  # pre-processing is an optimisation; quantize the plain model when it fails
        import shutil

        shutil.copy(src, dst)
