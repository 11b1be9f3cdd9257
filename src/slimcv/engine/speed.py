"""The start-up speed probe: a few training steps in each precision and memory layout, and the fastest kept.

bf16 autocast is tried only where the hardware computes bf16 (a CPU with AVX512-BF16 or AMX, a GPU that supports
it): elsewhere it is emulated and slower. Candidates are timed round-robin, so a neighbour that takes the cores for
a moment slows every candidate alike, and a candidate must beat the plain one (FP32, NCHW) by a clear margin.
"""
from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from slimcv.hardware import native_bf16

AUTO = "auto"
BUDGET_S = 15.0  # the probe stops timing new rounds once this is spent (one round always runs)
MARGIN = 0.05  # a setting must be this much faster than the plain one to be chosen over it


@dataclass(frozen=True)
class Setting:
    """How training steps run: autocast precision and memory layout."""

    amp: str = "none"
    channels_last: bool = False

    @property
    def label(self) -> str:
        return f"{'fp32' if self.amp == 'none' else self.amp} {'channels_last' if self.channels_last else 'NCHW'}"


@dataclass
class SpeedChoice:
    """The setting training runs with, why, and what the probe measured (images/s of each candidate)."""

    setting: Setting
    reason: str
    measured: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    batch_size: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"amp": self.setting.amp, "channels_last": self.setting.channels_last, "reason": self.reason,
                "measured": self.measured, "probe_seconds": round(self.seconds, 2), "batch_size": self.batch_size}

    def describe(self) -> str:
        if not self.measured:
            return f"training in {self.setting.label} ({self.reason})"
        rates = ", ".join(f"{m['label']} {m['images_per_s']:.1f}" if m["images_per_s"] else f"{m['label']} failed"
                          for m in self.measured)
        return f"training in {self.setting.label} ({self.reason}; images/s: {rates})"


def supports_bf16(device: torch.device) -> bool:
    """bf16 autocast is computed natively here (not emulated)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and native_bf16()


def candidates(device: torch.device, amp: str = AUTO, channels_last: bool | str = AUTO) -> list[Setting]:
    """The settings worth timing on ``device``; the first is the plain one. Fixed values are kept as given."""
    if amp == AUTO:
        amps = ["none"] + (["bf16"] if supports_bf16(device) else []) + (["fp16"] if device.type == "cuda" else [])
    else:
        amps = [amp]
    layouts = [False, True] if channels_last == AUTO else [bool(channels_last)]
    return [Setting(a, c) for a in amps for c in layouts]


def time_round_robin(steps: dict[Setting, Callable[[], None]], *, budget_s: float = BUDGET_S, rounds: int = 3,
                     timer: Callable[[], float] = time.perf_counter,
                     prepare: Callable[[Setting], None] | None = None,
                     failures: dict[Setting, str] | None = None) -> dict[Setting, list[float]]:
    """Seconds of each timed step per setting: one untimed warm-up step each, then up to ``rounds`` interleaved
    rounds while the budget lasts (at least one). ``prepare(setting)`` runs untimed before each step. A setting
    other than the first whose warm-up step fails is left out (its error goes to ``failures``)."""
    start = timer()
    steps = dict(steps)
    for s, step in list(steps.items()):
        if prepare is not None:
            prepare(s)
        try:
            step()
        except (RuntimeError, NotImplementedError) as e:  # e.g. an operator without a bf16 kernel
            if s == next(iter(steps)):
                raise  # the plain setting itself fails: training would too
            if failures is not None:
                failures[s] = (str(e).splitlines() or [type(e).__name__])[0][:200]
            del steps[s]
    times: dict[Setting, list[float]] = {s: [] for s in steps}
    for _ in range(rounds):
        round_start = timer()
        for s, step in steps.items():
            if prepare is not None:
                prepare(s)
            t = timer()
            step()
            times[s].append(timer() - t)
        now = timer()
        if now - start + (now - round_start) > budget_s:
            break
    return times


def pick(times: dict[Setting, Sequence[float]], margin: float = MARGIN) -> Setting:
    """The fastest setting by median step time; the first (plain) one unless another beats it by ``margin``."""
    settings = list(times)
    median = {s: statistics.median(times[s]) for s in settings}
    best = min(settings, key=median.__getitem__)
    return best if median[best] < median[settings[0]] * (1 - margin) else settings[0]


def probe(model: nn.Module, objective: Any, batch: tuple[torch.Tensor, Any], device: torch.device,
          make_optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer], settings: Sequence[Setting], *,
          budget_s: float = BUDGET_S, timer: Callable[[], float] = time.perf_counter) -> SpeedChoice:
    """Time training steps of ``model`` on ``batch`` in each setting and choose one. The model, the objective's
    state and every random generator are as they were afterwards: the run is the same as without the probe."""
    from slimcv.engine.loop import autocast, to_device

    params = list(model.parameters()) + (list(objective.parameters()) if isinstance(objective, nn.Module) else [])
    saved_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
    saved_objective = ({k: v.detach().clone() for k, v in objective.state_dict().items()}
                       if isinstance(objective, nn.Module) else None)
    optimizer = make_optimizer(params)
    images, targets = batch
    images, targets = images.to(device), to_device(targets, device)
    was_training = model.training
    model.train()
    current: list[Setting | None] = [None]

    def switch(setting: Setting) -> None:  # converting the weights' layout is not part of a step
        if current[0] is None or current[0].channels_last != setting.channels_last:
            model.to(memory_format=torch.channels_last if setting.channels_last else torch.contiguous_format)
        current[0] = setting

    def make_step(setting: Setting) -> Callable[[], None]:
        x = images.contiguous(memory_format=torch.channels_last) if setting.channels_last else images.contiguous()
        scaler = torch.amp.GradScaler("cuda") if setting.amp == "fp16" and device.type == "cuda" else None

        def step() -> None:
            with autocast(device, setting.amp):
                loss = objective(model, x, targets)["loss"]
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            _sync(device)

        return step

    steps = {s: make_step(s) for s in settings}
    start = time.perf_counter()
    failures: dict[Setting, str] = {}
    try:
        times = time_round_robin(steps, budget_s=budget_s, timer=timer, prepare=switch, failures=failures)
    finally:
        model.to(memory_format=torch.contiguous_format)
        model.load_state_dict(saved_model)
        if saved_objective is not None:
            objective.load_state_dict(saved_objective)
        optimizer.zero_grad(set_to_none=True)
        for p in params:
            p.grad = None
        model.train(was_training)
    n = images.shape[0]
    measured = [{"label": s.label, **asdict(s), "images_per_s": n / statistics.median(t)} for s, t in times.items()]
    measured += [{"label": s.label, **asdict(s), "images_per_s": None, "error": e} for s, e in failures.items()]
    chosen = pick(times)
    reason = "the fastest measured" if chosen != settings[0] else f"none measured clearly faster than {chosen.label}"
    return SpeedChoice(chosen, reason, measured, time.perf_counter() - start, n)


def choose(model: nn.Module, objective: Any, sample_batch: Callable[[], tuple[torch.Tensor, Any]],
           device: torch.device, make_optimizer: Callable, *, amp: str = AUTO, channels_last: bool | str = AUTO,
           enabled: bool = True, off_reason: str = "speed probe off", previous: dict[str, Any] | None = None,
           budget_s: float = BUDGET_S) -> SpeedChoice:
    """The setting a run trains with: as configured when fixed, the resumed run's when resuming, else measured
    (``sample_batch()`` makes the probe's batch). Random generators are left as they were."""
    plain = Setting("none" if amp == AUTO else amp, False if channels_last == AUTO else bool(channels_last))
    if amp != AUTO and channels_last != AUTO:
        return SpeedChoice(plain, "as configured")
    if previous is not None and previous.get("amp") not in (None, AUTO) and previous.get("channels_last") != AUTO:
        kept = Setting(previous["amp"] if amp == AUTO else amp,
                       bool(previous.get("channels_last")) if channels_last == AUTO else bool(channels_last))
        return SpeedChoice(kept, "kept from the run being resumed")
    if not enabled:
        return SpeedChoice(plain, off_reason)
    settings = candidates(device, amp, channels_last)
    if len(settings) == 1:
        why = "no native bf16 on this CPU" if amp == AUTO and device.type == "cpu" else "the only candidate"
        return SpeedChoice(settings[0], why)
    state = _rng_state()
    try:
        return probe(model, objective, sample_batch(), device, make_optimizer, settings, budget_s=budget_s)
    finally:
        _set_rng_state(state)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["cuda"])
