"""The candidate search: latencies measured before training, the budget applied to them."""
from __future__ import annotations

import pytest
import torch

from slimcv.errors import SlimcvError
from slimcv.models import create_model
from slimcv.pipeline import search as S


@pytest.fixture(scope="module")
def measured():
    torch.manual_seed(0)
    source = create_model("unet", 3, base_width=16, depth=2).eval()
    example = torch.randn(1, 3, 64, 64)
    space = S.SearchSpace(prune_ratios=(0.5,), students=[("unet", {"base_width": 4, "depth": 2})],
                          runtimes=("ort",))
    cands = S.enumerate_candidates(source, example, 3, "segmentation", space)
    ref = S.measure(cands, example, runs=8)
    return [c for c, _ in cands], ref


def test_every_candidate_is_measured_against_the_source_in_one_run(measured):
    cands, ref = measured
    assert [c.name for c in cands] == ["source", "pruned_0.5", "unet_base_width4_depth2"]
    assert all(c.latency_ms > 0 and c.params > 0 and c.macs > 0 for c in cands)
    source = next(c for c in cands if c.key == S.REFERENCE)
    assert source.latency_ms == ref and source.speedup == 1.0
    student = cands[-1]
    assert student.macs < 0.1 * source.macs and student.build == {"model": "unet",
                                                                  "model_kwargs": {"base_width": 4, "depth": 2}}
    assert student.speedup > 1.5  # 16x fewer MACs: clearly faster even on a noisy machine


def test_the_budget_keeps_what_meets_it(measured):
    cands, ref = measured
    budget = S.within_budget(cands, ref, target_speedup=1.5)
    assert budget == pytest.approx(ref / 1.5)
    assert all(c.meets == (c.latency_ms <= budget) for c in cands)
    assert not next(c for c in cands if c.kind == "source").meets and cands[-1].meets
    assert S.best_runtime_each(cands)[0].latency_ms <= budget
    assert S.within_budget(cands, ref, target_latency_ms=1e9) == 1e9 and all(c.meets for c in cands)
    with pytest.raises(SlimcvError, match="one target"):
        S.within_budget(cands, ref)


def test_default_students_suit_the_task():
    seg = S.default_students("segmentation", (176, 240))
    assert ("lraspp_mobilenet", {"width_mult": 0.5, "input_scale": 0.5}) in seg
    assert [n for n, _ in S.default_students("classification", (32, 32))] == ["resnet8", "resnet14", "resnet20"]
