"""Models as deployed (a file or module in a runtime of ``deploy.runtimes``) as torch modules and timing runners."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimcv.deploy import runtimes


class DeployedModule(nn.Module):
    """A model running in a runtime of the table (an ONNX file in ONNX Runtime or OpenVINO, or a module in bf16 or
    on the GPU) behind a torch forward, for ``engine.loop.evaluate``."""

    def __init__(self, source: Any, runtime: str = "ort", threads: int | None = None) -> None:
        super().__init__()
        self.runtime = runtimes.get(runtime).name
        self.path = Path(source) if isinstance(source, (str, Path)) else None
        self.run = runtimes.open_session(source, runtime, threads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.run(np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32))))


def deployed_runner(source: Any, example: torch.Tensor, runtime: str = "ort", threads: int | None = None
                    ) -> Callable[[], Any]:
    """One inference of ``example`` in ``runtime`` (for ``bench.latency.time_interleaved``)."""
    run = runtimes.open_session(source, runtime, threads)
    x = np.ascontiguousarray(example.detach().cpu().numpy(), dtype=np.float32)
    return lambda: run(x)


