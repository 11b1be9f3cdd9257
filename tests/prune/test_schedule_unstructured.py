import pytest
import torch

from slimcv.bench.macs import count_params
from slimcv.errors import SlimcvError
from slimcv.models import create_model
from slimcv.prune.schedule import prune_to_target
from slimcv.prune.unstructured import has_pruning_leftovers, prune_unstructured


@pytest.mark.parametrize("target", ["params", "macs"])
def test_iterative_schedule_reaches_target_within_one_percent(target):
    torch.manual_seed(0)
    model = create_model("resnet20", 10)
    x = torch.randn(1, 3, 32, 32)
    tuned = []
    records = prune_to_target(model, x, num_classes=10, remove=0.3, target=target, steps=2,
                              fine_tune=lambda m, step, history: tuned.append(step) or {"step_done": step})
    assert tuned == [1, 2]
    assert [r["step"] for r in records] == [1, 2]
    assert abs(records[-1]["achieved_remove"] - 0.3) <= 0.01
    assert 0.05 < records[0]["achieved_remove"] < records[1]["achieved_remove"]  # intermediate: channel granularity
    assert model(x).shape == (1, 10)


def test_unstructured_is_permanent_and_compresses():
    torch.manual_seed(0)
    model = create_model("resnet20", 10)
    n = count_params(model)
    before = model.state_dict().keys()
    report = prune_unstructured(model, 0.7, num_classes=10)
    assert report.sparsity == pytest.approx(0.7, abs=0.01)
    assert not has_pruning_leftovers(model)
    assert model.state_dict().keys() == before and count_params(model) == n
    assert report.zipped_bytes < 0.6 * report.dense_bytes
    assert (model.fc.weight == 0).float().mean() < 0.5  # the class layer is left alone
    with pytest.raises(SlimcvError):
        prune_unstructured(model, 1.2)


def test_steps_remove_the_same_fraction_of_what_is_left():
    torch.manual_seed(0)
    model = create_model("resnet20", 10)
    records = prune_to_target(model, torch.randn(1, 3, 32, 32), num_classes=10, remove=0.75, target="params",
                              steps=2)
    # geometric: half of the params after step 1 (not 62.5%), a quarter after step 2
    assert records[0]["achieved_remove"] == pytest.approx(0.5, abs=0.02)
    assert records[1]["achieved_remove"] == pytest.approx(0.75, abs=0.02)
