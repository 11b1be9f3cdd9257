"""The runtime table: every way slimcv can run a model, with its availability check on this machine.

Each entry says what it runs (an ``onnx`` file or a PyTorch ``module``), how to check it can run here (library
importable, CPU flags, a GPU), how to open a session, and the precision it computes in (``None``: the file's
own, FP32 or INT8). ``bench``, ``quantize``, the chooser and ``slimcv.deploy`` read it; a new runtime is one
entry (and its test). Importing this module needs only numpy: torch, ONNX Runtime and OpenVINO are imported
by the entries that use them.
"""
from __future__ import annotations

import copy

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from slimcv.errors import SlimcvError, close_matches
from slimcv.hardware import cpu_flags, isa_capped_below_bf16, native_bf16  # noqa: F401  (cpu_flags: re-exported)

Session = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Runtime:
    """One way to run a model: ``open(source, threads)`` gives a function from an NCHW float32 array to logits."""

    name: str
    runs: str  # "onnx" (an .onnx file) or "module" (a PyTorch nn.Module)
    check: Callable[[], str | None]  # None when it can run here, else the reason it cannot
    open: Callable[[Any, int | None], Session]
    precision: str | None = None  # computes in this precision; None: the file's own (fp32 or int8)
    device: str = "cpu"
    doc: str = ""
    formats: tuple[str, ...] = (".onnx",)  # the model files it reads (runs == "onnx")
    title: str = ""  # how reports name it in words

    @property
    def available(self) -> bool:
        return self.check() is None


# ----------------------------------------------------------------------------- availability checks

# machines OpenVINO publishes wheels for: slimcv installs it (and NNCF) there by default (pyproject.toml)
OPENVINO_MACHINES = ("x86_64", "AMD64", "aarch64", "arm64")

def _importable(module: str, extra: str) -> Callable[[], str | None]:
    def check() -> str | None:
        try:
            __import__(module)
        except ImportError:
            import platform

            if module == "openvino" and platform.machine() not in OPENVINO_MACHINES:
                return (f"OpenVINO publishes no wheels for this machine ({platform.machine()}), so slimcv was "
                        "installed without it")
            return f"{module} is not installed (pip install 'slimcv[{extra}]')" if extra else \
                f"{module} is not installed"
        return None

    return check


def _bf16_check() -> str | None:
    if isa_capped_below_bf16():
        return "ONEDNN_MAX_CPU_ISA holds oneDNN below its bf16 kernels"
    if not native_bf16():
        return "this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 would be emulated and slower"
    return None


def _cuda_check() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    return None if torch.cuda.is_available() else "no CUDA GPU here"


def _ort_cuda_check() -> str | None:
    missing = _importable("onnxruntime", "")() or _cuda_check()
    if missing:
        return missing
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return ("this onnxruntime build has no CUDA provider (pip uninstall -y onnxruntime && pip install "
                "onnxruntime-gpu, or the ort-cuda extra)")
    return None


def _ort_trt_check() -> str | None:
    missing = _ort_cuda_check()
    if missing:
        return missing
    import onnxruntime as ort

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime build has no TensorRT provider (onnxruntime-gpu with TensorRT installed)"
    return None


# ----------------------------------------------------------------------------- sessions

def ort_session(path: Any, threads: int | None = None, providers: list[str] | None = None) -> Any:
    """The one ONNX Runtime session factory: ``threads`` intra-op threads, all graph optimisations, no spinning.

    Idle worker threads do not spin after a run: several sessions share the cores in one process (timed
    interleaved), and spinning pools steal them from the next one (measured: identical INT8 files timed
    72-95 ms with spinning, 25-27 ms without; docs/quantization.md)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise SlimcvError("ONNX Runtime is not installed: pip install onnxruntime.") from e
    _need_file(path)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # ONNX Runtime raises its own types for files it cannot load
        raise SlimcvError(f"{path} is not an ONNX model ONNX Runtime can load "
                          f"({str(e).splitlines()[0][:200]}); export one with `slimcv export`.") from e


def _ort(providers: list[str]) -> Callable[[Any, int | None], Session]:
    def open_(path: Any, threads: int | None) -> Session:
        session = ort_session(path, threads, providers)
        first = session.get_inputs()[0]
        batch = first.shape[0] if first.shape and isinstance(first.shape[0], int) and first.shape[0] > 0 else None
        return in_fixed_batches(lambda x: session.run(None, {first.name: x})[0], batch)

    return open_


def in_fixed_batches(run: Session, batch: int | None) -> Session:
    """``run`` for any batch size: a file exported with a fixed batch is run that many images at a time (the last
    group padded with copies of its last image, their outputs dropped)."""
    if batch is None:
        return run

    def fixed(x: np.ndarray) -> np.ndarray:
        if x.shape[0] == batch:
            return run(x)
        outs = []
        for i in range(0, x.shape[0], batch):
            chunk = x[i:i + batch]
            n = chunk.shape[0]
            if n < batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
            outs.append(np.asarray(run(chunk))[:n])
        return np.concatenate(outs)

    return fixed


@lru_cache(maxsize=1)
def openvino_core() -> Any:
    """The process's one OpenVINO Core.

    Each Core's CPU plugin installs an alternate signal stack on the thread that compiles and puts the previous
    one back when it is destroyed; Cores destroyed out of order leave the thread pointing at freed memory, and
    the next signal handled in Python (torch's DataLoader SIGCHLD handler, when any child process exits) then
    kills the process with SIGSEGV. One Core for the whole process never unwinds out of order.
    """
    import openvino as ov

    return ov.Core()


def openvino_config(hint: str | None, threads: int | None) -> dict[str, Any]:
    """OpenVINO's compile settings: ``threads`` and the precision ``hint``. Without a hint OpenVINO picks bf16 from
    the CPU's flags, which fails to compile where ONEDNN_MAX_CPU_ISA holds oneDNN below its bf16 kernels: FP32 there."""
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads} if threads else {}
    if hint or isa_capped_below_bf16():
        config["INFERENCE_PRECISION_HINT"] = hint or "f32"
    return config


def _openvino(hint: str | None) -> Callable[[Any, int | None], Session]:
    def open_(path: Any, threads: int | None) -> Session:
        _need_file(path)
        config = openvino_config(hint, threads)
        try:
            compiled = openvino_core().compile_model(str(path), "CPU", config)
        except RuntimeError as e:
            raise SlimcvError(f"OpenVINO cannot compile {path} ({str(e).splitlines()[0][:200]}).") from e
        request = compiled.create_infer_request()
        dim = compiled.inputs[0].get_partial_shape()[0]
        batch = dim.get_length() if dim.is_static else None
        return in_fixed_batches(lambda x: np.asarray(next(iter(request.infer({0: x}).values()))), batch)

    return open_


def _torch(dtype: str | None, device: str) -> Callable[[Any, int | None], Session]:
    def open_(module: Any, threads: int | None) -> Session:
        import torch

        if threads:
            torch.set_num_threads(threads)
        # a copy on another device: the caller's module stays where it is, so a CPU row timed beside a GPU row
        # (bench, quantize) never finds its weights moved to the GPU under its CPU inputs
        net = module.eval() if device == "cpu" else copy.deepcopy(module).eval().to(device)

        def run(x: np.ndarray) -> np.ndarray:
            t = torch.from_numpy(x).to(device)
            with torch.inference_mode():
                if dtype == "bf16":
                    with torch.autocast(device_type=device, dtype=torch.bfloat16):
                        out = net(t)
                else:
                    out = net(t)
            return out.float().cpu().numpy()

        return run

    return open_


def _need_file(path: Any) -> None:
    if not Path(str(path)).is_file():
        raise SlimcvError(f"Model file {path} does not exist; export one with `slimcv export`.")


# The runtime names: every other module says them through these (a test finds no literal elsewhere).
EAGER, EAGER_BF16, EAGER_CUDA = "eager", "eager-bf16", "eager-cuda"
ORT, ORT_CUDA, ORT_TRT, OPENVINO, OPENVINO_F32 = "ort", "ort-cuda", "ort-tensorrt", "openvino", "openvino-f32"

TABLE: dict[str, Runtime] = {r.name: r for r in (
    Runtime(EAGER, "module", lambda: None, _torch(None, "cpu"), "fp32", doc="PyTorch eager, FP32", title="PyTorch"),
    Runtime(EAGER_BF16, "module", _bf16_check, _torch("bf16", "cpu"), "bf16",
            doc="PyTorch eager under bf16 autocast (CPUs with AVX512-BF16/AMX)", title="PyTorch (bf16 autocast)"),
    Runtime(EAGER_CUDA, "module", _cuda_check, _torch(None, "cuda"), "fp32", "cuda", doc="PyTorch on the GPU",
            title="PyTorch on the GPU"),
    Runtime(ORT, "onnx", _importable("onnxruntime", ""), _ort(["CPUExecutionProvider"]),
            doc="ONNX Runtime, CPU (FP32 files, and INT8 QDQ files in its INT8 kernels)", title="ONNX Runtime"),
    Runtime(ORT_CUDA, "onnx", _ort_cuda_check, _ort(["CUDAExecutionProvider", "CPUExecutionProvider"]),
            device="cuda", doc="ONNX Runtime's CUDA provider", title="ONNX Runtime (CUDA)"),
    Runtime(ORT_TRT, "onnx", _ort_trt_check,
            _ort(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]),
            device="cuda", doc="ONNX Runtime's TensorRT provider (where TensorRT is installed)",
            title="ONNX Runtime (TensorRT)"),
    Runtime(OPENVINO, "onnx", _importable("openvino", "openvino"), _openvino(None),
            doc="OpenVINO at its default precision for this CPU (bf16 where the CPU has native bf16: AVX512-BF16 or "
                "AMX; else FP32; INT8 files in INT8)", formats=(".onnx", ".xml"), title="OpenVINO"),
    Runtime(OPENVINO_F32, "onnx", _importable("openvino", "openvino"), _openvino("f32"), "fp32",
            doc="OpenVINO with FP32 inference forced (differs from 'openvino' where the CPU has AMX/bf16)",
            formats=(".onnx", ".xml"), title="OpenVINO (FP32 forced)"),
)}
# How tables draw each (runtime, precision) row: its label and its marker in plots.
MARKERS = {EAGER: "o", EAGER_BF16: "h", EAGER_CUDA: "8", f"{ORT}-fp32": "s", f"{ORT}-int8": "^",
           f"{ORT_CUDA}-fp32": "P", f"{ORT_CUDA}-int8": "X", f"{ORT_TRT}-fp32": "H", f"{ORT_TRT}-int8": "<",
           f"{OPENVINO}-fp32": "D", f"{OPENVINO}-int8": "v",
           OPENVINO_F32: "d", f"{OPENVINO}-bf16": "p"}


@dataclass(frozen=True)
class Row:
    """One way a model runs: a runtime of the table and the precision of the file it runs (tables' rows)."""

    runtime: str
    precision: str = "fp32"

    @property
    def label(self) -> str:
        return row_name(self.runtime, self.precision)

    @property
    def runs_module(self) -> bool:
        return get(self.runtime).runs == "module"
ALIASES = {"pytorch": EAGER, "torch": EAGER, "onnxruntime": ORT, "ov": OPENVINO}


def get(name: str) -> Runtime:
    """The table entry ``name`` (aliases: pytorch, onnxruntime, ov); a one-sentence error otherwise."""
    key = ALIASES.get(name, name)
    if key not in TABLE:
        raise SlimcvError(f"Unknown runtime {name!r}; choose from {', '.join(TABLE)}.{close_matches(name, TABLE)}")
    return TABLE[key]


def available(runs: str | None = None) -> list[Runtime]:
    """The entries that can run here (optionally only those that run ``onnx`` files or ``module``s)."""
    return [r for r in TABLE.values() if (runs is None or r.runs == runs) and r.available]


def unavailable() -> dict[str, str]:
    """Each entry that cannot run here, with the reason."""
    return {r.name: r.check() for r in TABLE.values() if not r.available}


def open_session(source: Any, runtime: str = "ort", threads: int | None = None) -> Session:
    """A function running ``source`` (an .onnx path or a module, as the runtime takes) on one NCHW array."""
    rt = get(runtime)
    why = rt.check()
    if why:
        raise SlimcvError(f"Runtime {rt.name!r} cannot run here: {why}.")
    if rt.runs == "onnx" and not reads(rt, source):
        raise SlimcvError(f"Runtime {rt.name!r} cannot read {source} (it reads {', '.join(rt.formats)} files); run "
                          f"it with runtime {default_for(source)!r}.")
    if rt.runs == "onnx":
        _need_file(source)
        check_image_model(source)
    return rt.open(source, threads)


def check_image_model(path: Any) -> None:
    """One sentence when an ONNX file is not what slimcv runs: one NCHW input of 3 (RGB) channels."""
    if Path(str(path)).suffix.lower() != ".onnx":
        return
    inputs = _graph_inputs(str(path), Path(str(path)).stat().st_mtime_ns)
    if inputs is None:
        return  # unreadable as a graph here: the session that opens it says why
    if len(inputs) != 1:
        names = ", ".join(name for name, _ in inputs)
        raise SlimcvError(f"{path} has {len(inputs)} inputs ({names}); slimcv runs image models with one NCHW image "
                          "input: export the model with the image as its only input.")
    name, dims = inputs[0]
    if len(dims) != 4:
        raise SlimcvError(f"{path} takes a {len(dims)}-D input {name!r}; slimcv feeds (N, 3, H, W) images: export "
                          "the model with an NCHW image input.")
    if isinstance(dims[1], int) and dims[1] > 0 and dims[1] != 3:
        raise SlimcvError(f"{path} takes {dims[1]}-channel images but slimcv feeds RGB (3 channels); export a model "
                          "that takes 3 channels (e.g. repeat a grey channel inside it).")


@lru_cache(maxsize=64)
def _graph_inputs(path: str, _mtime: int) -> list[tuple[str, list]] | None:
    try:
        import onnx

        graph = onnx.load(path, load_external_data=False).graph
    except Exception:  # not parseable here: left to the runtime, whose error is translated where it opens
        return None
    weights = {t.name for t in graph.initializer}
    return [(i.name, [d.dim_value if d.HasField("dim_value") else d.dim_param
                      for d in i.type.tensor_type.shape.dim]) for i in graph.input if i.name not in weights]


def finite_outputs(run: Session, source: Any) -> Session:
    """``run``, refusing NaN or infinite outputs: a broken file must not be scored or written as if it worked
    (for scoring and predicting; timing runs the session as it is, so latencies stay the runtime's own)."""
    label = source if isinstance(source, (str, Path)) else type(source).__name__

    def checked(x: np.ndarray) -> np.ndarray:
        out = run(x)
        if not np.isfinite(out).all():
            raise SlimcvError(f"{label} produced NaN or infinite outputs; the model or its export is broken (check "
                              "it in PyTorch, then export it again).")
        return out

    return checked


def row_name(runtime: str, precision: str) -> str:
    """How a (runtime, file precision) pair is labelled in tables: eager, eager-bf16, ort-fp32, ort-int8,
    openvino-int8, openvino-f32 (a runtime with a fixed precision is its own label)."""
    rt = get(runtime)
    return rt.name if rt.precision else f"{rt.name}-{precision}"


def computes_in(runtime: str, file_precision: str = "fp32") -> str:
    """The precision a runtime really computes a file of ``file_precision`` in on this CPU (OpenVINO's default
    is bf16 where the CPU has native bf16)."""
    rt = get(runtime)
    if rt.precision:
        return rt.precision
    if rt.name == OPENVINO and file_precision == "fp32" and native_bf16():
        return "bf16"
    return file_precision


def reads(runtime: Runtime | str, path: str | Path) -> bool:
    """Whether the runtime can load this model file (ONNX Runtime: .onnx; OpenVINO: .onnx and its IR .xml)."""
    rt = get(runtime) if isinstance(runtime, str) else runtime
    return Path(str(path)).suffix.lower() in rt.formats


def default_for(path: str | Path) -> str:
    """The runtime a model file runs in unless one is chosen: ONNX Runtime, or OpenVINO for an IR .xml file."""
    return OPENVINO if Path(str(path)).suffix.lower() == ".xml" else ORT


def pairs_with(runtime: Runtime, precision: str) -> bool:
    """Whether a runtime is worth measuring on a file of ``precision`` (forced-FP32 OpenVINO: FP32 files only)."""
    return runtime.precision is None or runtime.precision == precision
