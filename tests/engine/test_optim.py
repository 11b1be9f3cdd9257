import pytest
import torch

from slimcv.config import OptimConfig, ScheduleConfig
from slimcv.engine.optim import build_optimizer, build_scheduler


def _lrs(sched_cfg: ScheduleConfig, epochs=4, steps=10, opt="sgd"):
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model.parameters(), OptimConfig(name=opt, lr=1.0, weight_decay=0.1))
    scheduler = build_scheduler(optimizer, sched_cfg, epochs, steps)
    out = []
    for _ in range(epochs * steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out, optimizer


def test_warmup_then_cosine_to_zero():
    lrs, opt = _lrs(ScheduleConfig(name="cosine", warmup_epochs=1))
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] < 0.01
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    # weight decay only on the weight matrix, not on the bias
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


def test_step_and_poly():
    lrs, _ = _lrs(ScheduleConfig(name="step", step_size=2, gamma=0.1))
    assert lrs[19] == pytest.approx(1.0) and lrs[20] == pytest.approx(0.1)
    lrs, _ = _lrs(ScheduleConfig(name="poly", power=1.0))
    assert lrs[20] == pytest.approx(0.5) and lrs[-1] == pytest.approx(1 / 40)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_optimizers_by_name(name):
    _, opt = _lrs(ScheduleConfig(name="constant"), opt=name)
    assert type(opt).__name__.lower() == name
