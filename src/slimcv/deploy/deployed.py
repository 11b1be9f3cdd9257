"""Models as deployed (a file or module in a runtime of ``deploy.runtimes``) as torch modules and timing runners."""
from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slimcv.deploy import runtimes


class DeployedModule(nn.Module):
    """A model running in a runtime of the table (an ONNX file in ONNX Runtime or OpenVINO, or a module in bf16 or
    on the GPU) behind a torch forward, for ``engine.loop.evaluate``."""

    def __init__(self, source: Any, runtime: str = runtimes.ORT, threads: int | None = None) -> None:
        super().__init__()
        self.runtime = runtimes.get(runtime).name
        self.path = Path(source) if isinstance(source, (str, Path)) else None
        self.run = runtimes.finite_outputs(runtimes.open_session(source, runtime, threads), source)
        self.size = static_hw(self.path) if self.path is not None else None
        self._said = False
        selection = _box_selection(self.path) if self.path is not None else getattr(source, "selection", None)
        if selection is not None:  # a detector's file: evaluation selects its boxes as the predictor does
            self.selection = selection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            if not self._said:  # a file exported for one input size: the images are resized to it, once said
                warnings.warn(f"{self.path} takes {self.size[0]}x{self.size[1]} images; resizing the "
                              f"{x.shape[-2]}x{x.shape[-1]} inputs to it.", stacklevel=2)
                self._said = True
            h, w = x.shape[-2:]
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        else:
            h, w = x.shape[-2:]
        out = torch.from_numpy(np.asarray(self.run(np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32))))
        if hasattr(self, "selection") and self.size is not None and (h, w) != self.size:
            # a detector's boxes back in the pixels of the images it was given
            out[..., :4] *= torch.tensor([w / self.size[1], h / self.size[0]] * 2, dtype=out.dtype)
        return out


def _box_selection(path: Path | None):
    """The box selection a detector's sidecar records, or None (not a detector, or no sidecar)."""
    from slimcv.deploy.predictor import find_sidecar

    side = find_sidecar(path) if path is not None and path.suffix in (".onnx", ".xml") else None
    if side is None:
        return None
    import json

    meta = json.loads(side.read_text())
    if meta.get("task") != "detection":
        return None
    from slimcv.deploy.boxes import BoxSelection

    return BoxSelection.from_json(meta.get("selection", {}))


def static_hw(path: str | Path | None) -> tuple[int, int] | None:
    """The fixed (height, width) an ONNX file's first input takes, or None when either is dynamic."""
    if path is None or Path(path).suffix != ".onnx":
        return None
    import onnx

    try:
        dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    except Exception:  # unreadable here: the session that opened it reads it, so its own errors say why
        return None
    hw = [d.dim_value if d.HasField("dim_value") else None for d in dims[-2:]]
    return (hw[0], hw[1]) if len(dims) == 4 and None not in hw and min(hw) > 0 else None


def deployed_runner(source: Any, example: torch.Tensor, runtime: str = runtimes.ORT, threads: int | None = None
                    ) -> Callable[[], Any]:
    """One inference of ``example`` in ``runtime`` (for ``bench.latency.time_interleaved``)."""
    run = runtimes.open_session(source, runtime, threads)
    size = static_hw(source) if isinstance(source, (str, Path)) else None
    if size is not None and tuple(example.shape[-2:]) != size:  # timed at the size the file takes
        example = F.interpolate(example.float(), size=size, mode="bilinear", align_corners=False)
    x = np.ascontiguousarray(example.detach().cpu().numpy(), dtype=np.float32)
    return lambda: run(x)


