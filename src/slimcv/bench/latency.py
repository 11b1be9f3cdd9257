"""Latency of several runners measured interleaved, so their ratios are fair on a noisy machine."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimcv.errors import SlimcvError


@dataclass(frozen=True)
class Timing:
    """Per-call wall time of one runner, in milliseconds."""

    name: str
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    runs: int
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def eager_runner(model: nn.Module, example: torch.Tensor) -> Callable[[], Any]:
    """A no-grad eval-mode PyTorch forward on ``example`` (moved to the model's device)."""
    model.eval()
    first = next(model.parameters(), None)
    if first is not None:
        example = example.to(first.device)

    def run() -> Any:
        with torch.inference_mode():
            return model(example)

    return run


def ort_runner(session_or_path: Any, example: torch.Tensor | np.ndarray, threads: int | None = None
               ) -> Callable[[], Any]:
    """One ONNX Runtime ``run`` on ``example`` (a session or the path of an .onnx file)."""
    from slimcv.deploy.runtimes import ort_session

    session = ort_session(session_or_path, threads) if isinstance(session_or_path, (str, Path)) else session_or_path
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(
        example.detach().cpu().numpy() if isinstance(example, torch.Tensor) else example, dtype=np.float32)}
    return lambda: session.run(None, feed)


def time_interleaved(runners: Mapping[str, Callable[[], Any]], *, warmup: int = 3, runs: int = 20,
                     threads: int | None = None) -> dict[str, Timing]:
    """Time each runner ``runs`` times, taking turns round by round (start rotated) after ``warmup`` calls each."""
    if not runners:
        raise SlimcvError("Nothing to time: give at least one model or runtime.")
    if runs < 1:
        raise SlimcvError(f"runs must be at least 1, got {runs}.")
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        names = list(runners)
        for name in names:
            for _ in range(warmup):
                runners[name]()
        samples: dict[str, list[float]] = {n: [] for n in names}
        for r in range(runs):
            for name in names[r % len(names):] + names[:r % len(names)]:
                t0 = time.perf_counter()
                runners[name]()
                samples[name].append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(previous)
    used = threads or previous
    return {n: Timing(n, statistics.median(s), float(np.percentile(s, 90)), statistics.fmean(s), min(s), runs, used)
            for n, s in samples.items()}
