"""Pick the runtime to ship by measurement: the fastest candidate whose metric stays within the accuracy budget."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from slimcv.deploy.runtimes import ORT, Row
from slimcv.errors import SlimcvError


@dataclass(eq=False)
class Candidate:
    """One way to deploy a network: which network, in which runtime and precision (a row of the runtime table),
    what it costs and what it scores (higher is better). quantize's files and compress's searched networks
    (source, pruned copies, students) are candidates alike; ``choose_runtime`` and the search choose among them."""

    name: str
    metric: float | None = None  # for a searched network: filled in once trained (INT8: of the quantized file)
    latency_ms: float | None = None
    runtime: str = ORT
    precision: str = "fp32"
    kind: str = "file"  # file (a quantize variant) | source | pruned | student (the search's networks)
    # how to make it: {"model", "model_kwargs"}, {"prune_ratio" or "layer_ratios", "round_to"}; an INT8 row may
    # add "fp32_ends" (its file keeps the first and last layers in FP32)
    build: dict[str, Any] = field(default_factory=dict)
    params: int | None = None
    macs: int | None = None
    speedup: float | None = None
    meets: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def row(self) -> Row:
        return Row(self.runtime, self.precision)

    @property
    def label(self) -> str:
        """The runtime and precision as every table names them (ort-fp32, openvino-fp32, openvino-int8)."""
        return self.row.label

    @property
    def key(self) -> str:
        return f"{self.name}/{self.label}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Recommendation:
    name: str
    why: str
    candidate: Candidate


def choose_runtime(candidates: Sequence[Candidate], max_drop: float = 0.5, reference: float | None = None,
                   metric_name: str = "metric") -> Recommendation:
    """The fastest candidate at most ``max_drop`` points below ``reference`` (default: the best FP32 metric)."""
    if not candidates:
        raise SlimcvError("No deployment candidates were measured; give at least one model and runtime.")
    if max_drop < 0:
        raise SlimcvError(f"max_drop must be >= 0 points, got {max_drop}.")
    fp32 = [c.metric for c in candidates if c.precision == "fp32"]
    ref = reference if reference is not None else max(fp32 or [c.metric for c in candidates])
    ok = [c for c in candidates if c.metric >= ref - max_drop]
    if not ok:
        best = max(candidates, key=lambda c: c.metric)
        return Recommendation(best.name, f"no candidate is within {max_drop} pt of {metric_name} {ref:.2f}; "
                              f"{best.name} loses least ({ref - best.metric:.2f} pt)", best)
    fastest = min(ok, key=lambda c: c.latency_ms)
    others = sorted((c for c in candidates if c is not fastest), key=lambda c: c.latency_ms)
    beaten = ", ".join(f"{c.name} {c.latency_ms:.2f} ms" + ("" if c in ok else " (over budget)") for c in others[:4])
    why = (f"{fastest.name} is the fastest within {max_drop} pt of {metric_name} {ref:.2f}: "
           f"{fastest.latency_ms:.2f} ms at {metric_name} {fastest.metric:.2f}" + (f" (vs {beaten})" if beaten else ""))
    return Recommendation(fastest.name, why, fastest)
