"""Sizes: bytes on disk of weights and ONNX files, and what an ONNX graph holds (parameters, precision, input)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from slimcv.errors import SlimcvError

QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                       "MatMulInteger", "DynamicQuantizeLinear", "QGemm", "QLinearAdd"})


def file_bytes(path: str | Path) -> int:
    """Bytes a model file takes on disk: an .onnx file with its external data files, an OpenVINO IR .xml with its
    .bin."""
    path = Path(path)
    if not path.is_file():
        raise SlimcvError(f"{path} does not exist; check the path.")
    total = path.stat().st_size
    if path.suffix == ".onnx":
        total += sum((path.parent / loc).stat().st_size for loc in _external_files(path)
                     if (path.parent / loc).is_file())
    elif path.suffix.lower() == ".xml" and path.with_suffix(".bin").is_file():
        total += path.with_suffix(".bin").stat().st_size
    return total


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of the model's tensors (parameters and buffers) as a safetensors file would store them."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def onnx_summary(path: str | Path) -> dict[str, Any]:
    """Parameters, precision ('int8' when the graph holds quantized ops, else 'fp32') and input shape of an .onnx file.

    Parameters count initializer elements, leaving out quantization scales and zero points and integer
    shape constants (int64), so an INT8 file and its FP32 source count alike. Input dims that are symbolic are None."""
    try:
        import onnx
    except ImportError as e:
        raise SlimcvError("Reading an .onnx file needs the onnx package: pip install onnx.") from e
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001  (onnx raises DecodeError, OSError, ValueError ...)
        raise SlimcvError(f"{path} is not a readable ONNX file ({e}); export it again.") from e
    graph = model.graph
    quant_meta = {name for node in graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")
                  for name in node.input[1:]}
    params = 0
    for init in graph.initializer:
        if init.name in quant_meta or init.data_type == onnx.TensorProto.INT64:  # int64: shapes and indices
            continue
        n = 1
        for d in init.dims:
            n *= d
        params += n
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if not inputs:
        raise SlimcvError(f"{path} has no graph input; export the model with an input tensor.")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    int8 = any(node.op_type in QUANT_OPS for node in graph.node)
    return {"params": params, "precision": "int8" if int8 else "fp32", "input_shape": dims,
            "input_name": inputs[0].name, "opset": max((o.version for o in model.opset_import), default=None)}


def _external_files(path: Path) -> set[str]:
    try:
        import onnx
        from onnx.external_data_helper import uses_external_data
    except ImportError:
        return set()
    model = onnx.load(str(path), load_external_data=False)
    out = set()
    for init in model.graph.initializer:
        if uses_external_data(init):
            out |= {e.value for e in init.external_data if e.key == "location"}
    return out
