"""Deployed models as torch modules and timing runners: ONNX Runtime always, OpenVINO when it is installed."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimcv.bench.latency import ort_session
from slimcv.errors import SlimcvError

RUNTIMES = ("ort", "openvino")


def openvino_available() -> bool:
    """True when the OpenVINO runtime can be imported."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def make_session(path: str | Path, runtime: str = "ort", threads: int | None = None
                 ) -> Callable[[np.ndarray], np.ndarray]:
    """A function running the ONNX file at ``path`` on one float32 NCHW array in ``runtime``."""
    if runtime == "ort":
        session = ort_session(path, threads, spinning=False)  # many sessions share the cores in one process
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    if runtime == "openvino":
        if not openvino_available():
            raise SlimcvError("OpenVINO is not installed: pip install openvino, or use runtime 'ort'.")
        import openvino as ov

        config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
        compiled = ov.Core().compile_model(str(path), "CPU", config)
        request = compiled.create_infer_request()
        return lambda x: next(iter(request.infer({0: x}).values()))
    raise SlimcvError(f"Unknown runtime {runtime!r}; choose one of {list(RUNTIMES)}.")


class DeployedModule(nn.Module):
    """An ONNX file running in ONNX Runtime (or OpenVINO) behind a torch forward, for ``engine.loop.evaluate``."""

    def __init__(self, path: str | Path, runtime: str = "ort", threads: int | None = None) -> None:
        super().__init__()
        self.path, self.runtime = Path(path), runtime
        self.run = make_session(path, runtime, threads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.run(np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32))))


def deployed_runner(path: str | Path, example: torch.Tensor, runtime: str = "ort", threads: int | None = None
                    ) -> Callable[[], Any]:
    """One inference of ``example`` in ``runtime`` (for ``bench.latency.time_interleaved``)."""
    run = make_session(path, runtime, threads)
    x = np.ascontiguousarray(example.detach().cpu().numpy(), dtype=np.float32)
    return lambda: run(x)


def cpu_features() -> dict[str, Any]:
    """The CPU's name and the instruction sets that decide INT8 speed (Linux /proc/cpuinfo; empty elsewhere)."""
    import platform

    info: dict[str, Any] = {"machine": platform.machine(), "model": platform.processor() or None}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    first = text.split("\n\n", 1)[0].splitlines()
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in first if ":" in line)}
    flags = set(fields.get("flags", "").split())
    info["model"] = fields.get("model name") or info["model"]
    info.update({"avx2": "avx2" in flags, "avx512": "avx512f" in flags,
                 "vnni": bool(flags & {"avx512_vnni", "avx_vnni"}), "amx": "amx_int8" in flags})
    return info
