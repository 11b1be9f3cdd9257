"""The start-up speed probe: the choice logic on a fake clock, and a real probe recorded in the run folder."""
from __future__ import annotations

import json

import pytest
import torch

import slimcv
from slimcv import hardware
from slimcv.engine import speed as S

PLAIN, CL, BF16, BF16_CL = S.Setting(), S.Setting("none", True), S.Setting("bf16"), S.Setting("bf16", True)


class FakeClock:
    """A timer that only moves when a fake step runs: each step takes its setting's seconds."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def steps(self, seconds: dict) -> dict:
        def step(s):
            def run():
                self.now += seconds[s]
            return run
        return {s: step(s) for s in seconds}


def _measure(seconds, budget_s=15.0):
    clock = FakeClock()
    return S.time_round_robin(clock.steps(seconds), budget_s=budget_s, timer=clock)


def test_the_clearly_faster_setting_is_chosen():
    times = _measure({PLAIN: 1.0, CL: 0.8, BF16: 0.5, BF16_CL: 0.4})
    assert S.pick(times) == BF16_CL
    assert all(len(t) == 3 for t in times.values()) and times[BF16] == [0.5] * 3


def test_the_plain_setting_stays_unless_another_beats_it_by_the_margin():
    assert S.pick(_measure({PLAIN: 1.0, CL: 0.97, BF16: 1.2})) == PLAIN
    assert S.pick(_measure({PLAIN: 1.0, CL: 0.90})) == CL


def test_timing_stops_at_the_budget_but_times_every_setting_once():
    times = _measure({PLAIN: 4.0, BF16: 4.0}, budget_s=15.0)  # warm-up 8 s, one round 8 s: no second round
    assert [len(t) for t in times.values()] == [1, 1]
    times = _measure({PLAIN: 0.01, BF16: 0.01})
    assert [len(t) for t in times.values()] == [3, 3]


def test_a_setting_whose_step_fails_is_left_out_but_the_plain_one_must_work():
    clock = FakeClock()
    steps = clock.steps({PLAIN: 1.0, BF16: 0.5, CL: 0.9})

    def broken():
        raise RuntimeError("no bf16 kernel for this operator\nmore detail")

    steps[BF16] = broken
    failures = {}
    times = S.time_round_robin(steps, timer=clock, failures=failures)
    assert set(times) == {PLAIN, CL} and S.pick(times) == CL
    assert failures == {BF16: "no bf16 kernel for this operator"}
    steps[PLAIN] = broken
    with pytest.raises(RuntimeError):
        S.time_round_robin(steps, timer=clock)


def test_bf16_is_never_a_candidate_without_native_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_vnni"}))
    assert S.candidates(cpu) == [PLAIN, CL]
    choice = S.choose(None, None, None, cpu, None, channels_last=False)  # nothing left to measure
    assert choice.setting == PLAIN and "no native bf16" in choice.reason and not choice.measured
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert S.candidates(cpu) == [PLAIN, CL, BF16, BF16_CL]
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"amx_bf16", "amx_int8"}))
    assert BF16 in S.candidates(cpu)
    assert S.candidates(cpu, amp="none", channels_last=True) == [CL]


def test_fixed_and_resumed_settings_are_not_measured():
    cpu = torch.device("cpu")
    fixed = S.choose(None, None, None, cpu, None, amp="bf16", channels_last=False)
    assert fixed.setting == BF16 and fixed.reason == "as configured"
    kept = S.choose(None, None, None, cpu, None, previous={"amp": "bf16", "channels_last": True})
    assert kept.setting == BF16_CL and "resumed" in kept.reason
    off = S.choose(None, None, None, cpu, None, enabled=False)
    assert off.setting == PLAIN and off.reason == "speed probe off"


SYNTH = {"spec": "synthetic-shapes", "options": {"size": 32, "length": 32}, "augment": ["hflip"], "batch_size": 8,
         "workers": 0, "val_subset": 8}


def _cfg(out, **over):
    return {"model": "unet_small", "model_kwargs": {"base_width": 4, "depth": 2}, "data": SYNTH, "epochs": 1,
            "optim": {"name": "adam", "lr": 0.01}, "out_dir": str(out), "progress": False, "tensorboard": False,
            **over}


def test_a_real_probe_is_recorded_and_leaves_the_run_as_without_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMCV_SPEED_PROBE", "1")
    probed = slimcv.train(_cfg(tmp_path / "probed"))
    record = json.loads((tmp_path / "probed" / "speed.json").read_text())
    config = json.loads((tmp_path / "probed" / "config.json").read_text())
    assert record["reason"] in ("the fastest measured", "none measured clearly faster than fp32 NCHW")
    labels = [m["label"] for m in record["measured"]]
    assert labels[:2] == ["fp32 NCHW", "fp32 channels_last"]
    assert ("bf16 NCHW" in labels) == hardware.native_bf16()
    assert all(m["images_per_s"] > 0 for m in record["measured"]) and record["cpu"]["model"] is not None
    # config.json holds what the run did, so its rebuild command trains the same way
    assert (config["amp"], config["channels_last"]) == (record["amp"], record["channels_last"])
    assert probed.speed.setting == S.Setting(record["amp"], record["channels_last"])
    # the same run with that setting fixed and no probe: the probe's steps left no trace
    fixed = slimcv.train(_cfg(tmp_path / "fixed", amp=record["amp"], channels_last=record["channels_last"]))
    a, b = probed.model.state_dict(), fixed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "fixed" / "speed.json").read_text())["reason"] == "as configured"
    # resuming with auto keeps the recorded choice without measuring again
    resumed = slimcv.train(_cfg(tmp_path / "probed", epochs=2, resume=True))
    assert resumed.speed.reason == "kept from the run being resumed" and resumed.speed.setting == probed.speed.setting


def test_cli_flags_fix_the_setting(tmp_path, monkeypatch):
    from slimcv.cli import main

    monkeypatch.setenv("SLIMCV_SPEED_PROBE", "1")
    monkeypatch.chdir(tmp_path)
    rc = main(["train", "--model", "unet_small", "--set", "model_kwargs.base_width=4", "--set",
               "model_kwargs.depth=2", "--data", "synthetic-shapes", "--set", "data.options.size=32", "--set",
               "data.options.length=16", "--epochs", "1", "--amp", "none", "--no-channels-last", "-o", "run"])
    assert rc in (0, None)
    record = json.loads((tmp_path / "run" / "speed.json").read_text())
    assert record["reason"] == "as configured" and (record["amp"], record["channels_last"]) == ("none", False)
    rc = main(["train", "--model", "unet_small", "--set", "model_kwargs.base_width=4", "--set",
               "model_kwargs.depth=2", "--data", "synthetic-shapes", "--set", "data.options.size=32", "--set",
               "data.options.length=16", "--epochs", "1", "--no-speed-probe", "-o", "run2"])
    record = json.loads((tmp_path / "run2" / "speed.json").read_text())
    assert record["reason"] == "speed probe off" and (record["amp"], record["channels_last"]) == ("none", False)


def test_deterministic_runs_are_not_probed(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMCV_SPEED_PROBE", "1")
    r = slimcv.train(_cfg(tmp_path / "d", deterministic=True))
    assert r.speed.reason == "deterministic run: speed probe off" and r.speed.setting == PLAIN
