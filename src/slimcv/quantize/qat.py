"""Quantization-aware training with PyTorch FX graph mode, exported as a real INT8 (QDQ) ONNX model.

Route, chosen by trying (docs/quantization.md): torchao's PT2E X86InductorQuantizer failed on torchvision
resnet18 and PT2E is no longer in torch 2.14 itself; NNCF is not installable without heavy extras. FX graph mode
(``prepare_qat_fx``) works on every registered family once two things are handled here:

* FX cannot trace Python branches on input sizes (the U-Net pads odd sizes). :class:`ShapeTracer` evaluates
  such a branch on the example input, as TorchScript tracing does; the example has an odd size, so the general
  (padding) branch is recorded and any size works afterwards.
* BatchNorm is folded into the convolutions before QAT (eval-mode fusion), so the exported graph is
  ``QuantizeLinear -> DequantizeLinear -> Conv`` which ONNX Runtime runs as ``QLinearConv`` (INT8 kernels).
  QAT's own ConvBn modules export as Conv + Div + BatchNormalization that ORT keeps in FP32.

Weights: per-channel symmetric, 7-bit (-64..63) like ORT's ``reduce_range`` (no u8s8 saturation without VNNI);
activations: per-tensor affine uint8. Plain ``FakeQuantize`` modules are used because the fused observer op has
no ONNX export. The fake-quant graph is exported with the TorchScript exporter, which turns each FakeQuantize
into QuantizeLinear/DequantizeLinear.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from slimcv.errors import SlimcvError


class ShapeTracer(fx.Tracer):
    """An FX tracer that settles ``if`` on traced values by evaluating the partial graph on a real example."""

    def __init__(self, example: torch.Tensor) -> None:
        super().__init__()
        self.example = example

    def to_bool(self, obj: fx.Proxy) -> bool:
        graph, env = fx.Graph(), {}
        for node in self.graph.nodes:
            env[node] = graph.node_copy(node, lambda a: env[a])
            if node is obj.node:
                break
        graph.output(env[obj.node])
        partial = fx.GraphModule(self.root, graph)
        from torch.fx import _symbolic_trace

        patcher = _symbolic_trace.CURRENT_PATCHER  # run the real modules, not the tracing patches
        if patcher is not None:
            patcher.revert_all_patches()
        try:
            with torch.no_grad():
                return bool(partial(self.example))
        finally:
            if patcher is not None:
                patcher.reapply_all_patches()


class QatModel(nn.Module):
    """The prepared FX graph; its state_dict copies tensors that fake-quant modules share, so safetensors saves it."""

    def __init__(self, graph_module: fx.GraphModule) -> None:
        super().__init__()
        self.model = graph_module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def state_dict(self, *args, **kwargs):
        sd = super().state_dict(*args, **kwargs)
        return type(sd)((k, v.clone()) for k, v in sd.items())


def qat_qconfig():
    """7-bit symmetric per-channel weights, uint8 per-tensor activations, both with moving-average observers."""
    from torch.ao.quantization import FakeQuantize, QConfig
    from torch.ao.quantization.observer import MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver

    act = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                 dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    weight = FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-64, quant_max=63,
                                    dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)
    return QConfig(activation=act, weight=weight)


def prepare_qat(model: nn.Module, example: torch.Tensor) -> QatModel:
    """A copy of ``model`` with BatchNorm folded and fake quantization on weights and activations, in train mode."""
    import copy

    from torch.ao.quantization import QConfigMapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx
    from torch.fx.experimental.optimization import fuse

    model = copy.deepcopy(model).cpu().eval()
    h, w = example.shape[-2:]
    example = F.pad(example[:1], (0, 1 - w % 2, 0, 1 - h % 2), mode="replicate") if example.ndim == 4 else example
    try:
        graph = ShapeTracer(example).trace(model)
        gm = fuse(fx.GraphModule(model, graph), no_trace=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # torch.cat would share one observer across its inputs: a U-Net skip (after ReLU, >= 0) and an
            # upsampled map (signed) get a zero point > 0, ReLU can no longer fold into the quantizer, and ORT
            # keeps those convolutions in FP32. Concatenating dequantized maps costs nothing.
            mapping = QConfigMapping().set_global(qat_qconfig()).set_object_type(torch.cat, None)
            prepared = prepare_qat_fx(gm.train(), mapping, example_inputs=(example,))
        return QatModel(prepared)
    except Exception as e:
        raise SlimcvError(f"Cannot prepare {type(model).__name__} for quantization-aware training with FX "
                          f"({str(e).splitlines()[0][:200]}); use static PTQ instead.") from e


def freeze(qat_model: nn.Module) -> nn.Module:
    """Stop observers (scales fixed) and set eval mode: the model the INT8 export reproduces."""
    from torch.ao.quantization import disable_observer

    qat_model.eval()
    qat_model.apply(disable_observer)
    return qat_model


def export_qat(qat_model: nn.Module, example: torch.Tensor, out: str | Path, *, opset: int = 17,
               dynamic_hw: bool = False) -> Path:
    """Export the frozen fake-quant model as QDQ ONNX (TorchScript exporter) that ORT runs with INT8 kernels."""
    from torch.ao.quantization import FakeQuantize

    from slimcv._io import atomic_write

    qat_model = freeze(qat_model.model if isinstance(qat_model, QatModel) else qat_model)
    for m in qat_model.modules():  # 7-bit weight codes fit int8: ONNX QuantizeLinear only knows the 8-bit ranges
        if isinstance(m, FakeQuantize) and m.activation_post_process.quant_min == -64:
            m.activation_post_process.quant_min, m.activation_post_process.quant_max = -128, 127
            m.quant_min, m.quant_max = -128, 127
    axes = {0: "batch", **({2: "height", 3: "width"} if dynamic_hw else {})}
    if dynamic_hw:
        h, w = example.shape[-2:]
        example = F.pad(example, (0, 1 - w % 2, 0, 1 - h % 2), mode="replicate")

    def write(tmp: str) -> None:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(qat_model, (example[:1],), tmp, dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": axes, "logits": dict(axes)})

    try:
        atomic_write(out, write)
    except Exception as e:
        raise SlimcvError(f"Cannot export the QAT model to ONNX opset {opset} "
                          f"({str(e).splitlines()[0][:200]}); try --opset 17.") from e
    return fold_constant_quantizers(out)


def fold_constant_quantizers(path: str | Path) -> Path:
    """Store QuantizeLinear of constant FP32 weights as int8 initializers (the exporter keeps FP32 weights + Q)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from slimcv._io import atomic_write

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}

    def const(name: str):
        if name in inits:
            return numpy_helper.to_array(inits[name])
        node = producer.get(name)
        if node is not None and node.op_type == "Identity":
            return const(node.input[0])
        if node is not None and node.op_type == "Constant" and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    folded = []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3:
            continue
        w, scale, zp = (const(i) for i in node.input[:3])
        if w is None or scale is None or zp is None or w.dtype != np.float32:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and scale.size > 1:
            shape = [1] * w.ndim
            shape[axis] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        info = np.iinfo(zp.dtype)
        q = np.clip(np.rint(w / scale) + zp.astype(np.int32), info.min, info.max).astype(zp.dtype)
        graph.initializer.append(numpy_helper.from_array(q, node.output[0]))
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    _store_float_weights_int8(graph, inits)
    _drop_dead(graph)
    return atomic_write(path, lambda tmp: onnx.save(model, tmp))


def _store_float_weights_int8(graph, inits: dict) -> None:
    """Weights FX QAT leaves in float (ConvTranspose has no QAT module): int8 per output channel + DequantizeLinear.

    Storage only, as ONNX Runtime's own PTQ does for these layers: the layer still computes in FP32."""
    import numpy as np
    from onnx import NodeProto, helper, numpy_helper

    nodes, done = [], set()
    for src in graph.node:
        node = NodeProto()
        node.CopyFrom(src)
        w = numpy_helper.to_array(inits[node.input[1]]) if (
            node.op_type in ("ConvTranspose", "Conv") and len(node.input) > 1 and node.input[1] in inits) else None
        if w is not None and w.dtype == np.float32 and w.ndim == 4:
            axis = 1 if node.op_type == "ConvTranspose" else 0  # the output-channel axis of the weight
            amax = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(1)
            scale = np.maximum(amax / 127.0, 1e-12).astype(np.float32)
            shape = [1] * 4
            shape[axis] = -1
            q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
            name = node.input[1]
            node.input[1] = f"{name}_dq"
            if name in done:
                nodes.append(node)
                continue
            done.add(name)
            graph.initializer.extend([numpy_helper.from_array(q, f"{name}_int8"),
                                      numpy_helper.from_array(scale, f"{name}_scale"),
                                      numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{name}_zero")])
            nodes.append(helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale", f"{name}_zero"],
                                          [f"{name}_dq"], axis=axis))
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def _drop_dead(graph) -> None:
    """Remove nodes and initializers nothing reads any more."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input} | outputs
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
