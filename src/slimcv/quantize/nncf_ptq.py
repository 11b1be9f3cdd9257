"""OpenVINO INT8 by NNCF's post-training quantization (``nncf.quantize`` with its defaults), as an IR file.

This is what a CPU user would do with OpenVINO's own tools, so ``slimcv quantize`` builds it beside its ONNX
Runtime QDQ files and lets the measurement decide. NNCF runs in a child process: it creates and destroys its
own OpenVINO Cores, which in a long-lived process (a notebook, a recipe run) would unwind the thread's signal
stack out of order (see ``deploy.runtimes.openvino_core``); the child also keeps NNCF's memory out of ours.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from slimcv.errors import SlimcvError


def unavailable() -> str | None:
    """Why NNCF INT8 cannot be built here (None when it can)."""
    from importlib.util import find_spec

    missing = [m for m in ("openvino", "nncf") if find_spec(m) is None]
    return f"{' and '.join(missing)} not installed (pip install 'slimcv[openvino]')" if missing else None


def quantize_nncf(fp32_onnx: str | Path, out_xml: str | Path, calibration: list[np.ndarray],
                  timeout_s: float = 1800, keep_fp32: Sequence[str] = ()) -> Path:
    """Quantize ``fp32_onnx`` with ``nncf.quantize`` on ``calibration`` (each (1, C, H, W) float32); write the
    OpenVINO IR ``out_xml`` (+ ``.bin``). ``keep_fp32``: ONNX node names left in FP32 (NNCF's ignored scope)."""
    why = unavailable()
    if why:
        raise SlimcvError(f"NNCF INT8 needs OpenVINO and NNCF: {why}.")
    out_xml = Path(out_xml)
    with tempfile.TemporaryDirectory(prefix="slimcv-nncf-") as tmp:
        batch = Path(tmp) / "calibration.npy"
        np.save(batch, np.concatenate(calibration).astype(np.float32), allow_pickle=False)
        job = {"onnx": str(fp32_onnx), "xml": str(out_xml), "calibration": str(batch), "keep_fp32": list(keep_fp32)}
        done = subprocess.run([sys.executable, "-m", "slimcv.quantize.nncf_ptq", json.dumps(job)],
                              capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0 or not out_xml.is_file():
        tail = (done.stderr.strip().splitlines() or ["no message"])[-1][:300]
        raise SlimcvError(f"NNCF could not quantize {fp32_onnx} ({tail}); leave NNCF out with --no-nncf.")
    return out_xml


def _run(job: dict) -> None:
    import nncf
    import openvino as ov

    images = np.load(job["calibration"], allow_pickle=False)
    model = ov.Core().read_model(job["onnx"])
    dataset = nncf.Dataset(list(images), lambda x: x[None])
    ignored = ov_names(model, _with_outputs(job["onnx"], job.get("keep_fp32", ())))
    scope = {"ignored_scope": nncf.IgnoredScope(names=ignored)} if ignored else {}
    quantized = nncf.quantize(model, dataset, subset_size=len(images), **scope)
    ov.save_model(quantized, job["xml"])


def _with_outputs(onnx_path: str, names: Sequence[str]) -> list[str]:
    """ONNX node names and their output tensors' names (OpenVINO names an operation that writes a graph output
    after that output)."""
    import onnx

    if not names:
        return []
    wanted = set(names)
    nodes = onnx.load(onnx_path, load_external_data=False).graph.node
    return sorted(wanted | {o for n in nodes if n.name in wanted for o in n.output})


def ov_names(model, onnx_names: Sequence[str]) -> list[str]:
    """The OpenVINO operations that ONNX nodes (or their outputs) became: the same name, or the name plus a suffix
    (a convolution with a bias becomes ``<name>/WithoutBiases`` and its Add)."""
    wanted = set(onnx_names)
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() not in ("Parameter", "Result")
            and (op.get_friendly_name() in wanted or op.get_friendly_name().rsplit("/", 1)[0] in wanted)]


if __name__ == "__main__":
    _run(json.loads(sys.argv[1]))
