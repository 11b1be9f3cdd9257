"""Peak memory of one model in one runtime, measured in a fresh process so earlier work cannot hide it.

Method (``METHOD``): a child Python process imports its runtime (torch, onnxruntime or openvino), reads its resident
set size, loads the model, hands heap freed while loading back to the OS (``malloc_trim``) and restarts the
kernel's high-water mark (``/proc/self/clear_refs``), runs ``runs`` inferences on a zero input and reads the
high-water mark (``VmHWM`` in /proc/self/status, else ``ru_maxrss``). The figure reported is the high-water
mark minus the resident size before loading: weights + activations + runtime workspace, without one-time
loading work such as replaying a pruning history.
``tracemalloc`` would miss ATen's and ONNX Runtime's native allocations; RSS sees them all. Measuring in
the benchmark's own process would under-count, because the allocator keeps memory freed by earlier
models resident and reuses it.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

METHOD = ("peak RSS of a fresh process during the runs (VmHWM, reset after loading) minus its RSS before "
          "loading the model: weights + activations + runtime workspace")


def peak_memory_mb(spec: dict[str, Any], timeout: float = 300.0) -> float | None:
    """Peak resident-memory growth (MiB) of running ``spec`` in a child process, None when it cannot run.

    ``spec`` holds ``runtime`` (a runtime table entry: eager, ort, openvino, ...), ``source`` (run folder, model name or .onnx path),
    ``input_shape`` (batch included), ``threads`` and optionally ``num_classes`` and ``runs``."""
    try:
        done = subprocess.run([sys.executable, "-m", "slimcv.bench.memory", json.dumps(spec)], capture_output=True,
                              text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    try:
        out = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return max(0.0, out["peak_mb"] - out["before_load_mb"])


def _rss_mb(field: str) -> float | None:
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return None


def _peak_mb() -> float:
    peak = _rss_mb("VmHWM")
    if peak is not None:
        return peak
    import resource

    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def _child(spec: dict[str, Any]) -> dict[str, float]:
    import numpy as np

    shape = tuple(spec["input_shape"])
    runs = int(spec.get("runs", 3))
    from slimcv.deploy import runtimes

    rt = runtimes.get(spec["runtime"])
    rt.check()  # imports the runtime's library before the baseline
    x = np.zeros(shape, np.float32)
    if rt.runs == "onnx":
        before = _rss_mb("VmRSS") or _peak_mb()
        session = runtimes.open_session(spec["source"], rt.name, spec.get("threads"))
    else:
        import torch

        from slimcv.engine.evaluation import load_model

        if spec.get("threads"):
            torch.set_num_threads(int(spec["threads"]))
        if _is_pruned_run(spec["source"]):
            import slimcv.prune.structured  # noqa: F401  (Torch-Pruning imported before the baseline)
        before = _rss_mb("VmRSS") or _peak_mb()
        model, _ = load_model(spec["source"], spec.get("num_classes"), **spec.get("kwargs", {}))
        session = runtimes.open_session(model, rt.name, spec.get("threads"))

    def run() -> None:
        session(x)
    _forget_loading()
    for _ in range(runs):
        run()
    return {"before_load_mb": before, "peak_mb": _peak_mb()}


def _forget_loading() -> None:
    """Return heap freed while loading to the OS and restart the high-water mark from here (Linux, best effort),
    so one-time loading work (replaying a pruning history, graph optimisation) does not count as inference."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except (OSError, AttributeError):
        pass


def _is_pruned_run(source: str) -> bool:
    from slimcv.artifact import is_model_folder, read_model_spec

    return is_model_folder(source) and bool(read_model_spec(source).get("pruning_history"))


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))
