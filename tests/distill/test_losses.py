import math

import pytest
import torch

from slimcv.distill.losses import KD_LOSSES, cwd, dist, dkd, kd
from slimcv.errors import SlimcvError

KL_3_1 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)  # KL([.75,.25] || [.5,.5])


def test_kd_by_hand_with_t_squared_scaling():
    s = torch.zeros(1, 2)
    t1 = torch.tensor([[math.log(3.0), 0.0]])
    assert kd(s, t1, temperature=1.0)["loss"].item() == pytest.approx(KL_3_1, rel=1e-5)
    t2 = torch.tensor([[2 * math.log(3.0), 0.0]])  # same distribution at T=2
    assert kd(s, t2, temperature=2.0)["loss"].item() == pytest.approx(4 * KL_3_1, rel=1e-5)


def test_kd_per_pixel_excludes_ignore_and_averages_valid():
    s = torch.zeros(1, 2, 1, 3)
    t = torch.zeros(1, 2, 1, 3)
    t[0, 0, 0, 0] = math.log(3.0)  # valid pixel with KL_3_1
    t[0, 0, 0, 2] = 50.0  # huge disagreement, but ignored
    target = torch.tensor([[[0, 1, 255]]])
    loss = kd(s, t, target, temperature=1.0)["loss"].item()
    assert loss == pytest.approx(KL_3_1 / 2, rel=1e-5)  # mean over the 2 valid pixels


def test_cwd_spatial_softmax_by_hand_and_ignore():
    s = torch.zeros(1, 1, 1, 2)
    t = torch.tensor([[[[math.log(3.0), 0.0]]]])
    assert cwd(s, t, temperature=1.0)["loss"].item() == pytest.approx(KL_3_1, rel=1e-5)
    # a third, ignored position must not change the value
    s3, t3 = torch.zeros(1, 1, 1, 3), torch.tensor([[[[math.log(3.0), 0.0, 40.0]]]])
    target = torch.tensor([[[0, 0, 255]]])
    assert cwd(s3, t3, target, temperature=1.0)["loss"].item() == pytest.approx(KL_3_1, rel=1e-4)
    with pytest.raises(ValueError):
        cwd(torch.zeros(2, 3), torch.zeros(2, 3))


def test_dkd_and_dist_vanish_when_student_equals_teacher_and_not_otherwise():
    torch.manual_seed(0)
    logits = torch.randn(8, 10)
    y = torch.randint(0, 10, (8,))
    assert dkd(logits, logits, y)["loss"].item() == pytest.approx(0.0, abs=1e-5)
    assert dist(logits, logits)["loss"].item() == pytest.approx(0.0, abs=1e-5)
    other = torch.randn(8, 10)
    assert dkd(other, logits, y)["loss"].item() > 0.01
    assert dist(other, logits)["loss"].item() > 0.01


def test_dkd_tckd_by_hand():
    # 2 classes: NCKD has one non-target class (zero), TCKD is the plain binary KL
    s, t = torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]])
    out = dkd(s, t, torch.tensor([0]), temperature=1.0, alpha=1.0, beta=8.0)
    assert out["tckd"].item() == pytest.approx(KL_3_1, rel=1e-4)
    assert out["nckd"].item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", ["kd", "dkd", "dist"])
def test_gradient_moves_student_toward_teacher(name):
    torch.manual_seed(1)
    teacher = torch.randn(16, 5) * 3
    y = teacher.argmax(1)
    student = torch.zeros(16, 5, requires_grad=True)
    opt = torch.optim.SGD([student], lr=0.5)
    fn = KD_LOSSES.get(name)
    first = None
    for _ in range(200):
        loss = fn(student, teacher, y, temperature=2.0)["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first
    agree = (student.argmax(1) == teacher.argmax(1)).float().mean().item()
    assert agree >= 0.9


def test_unknown_loss_suggests():
    with pytest.raises(SlimcvError, match="'kd'"):
        KD_LOSSES.get("kdd")
