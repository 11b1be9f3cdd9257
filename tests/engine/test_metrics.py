import math

import pytest
import torch

from slimcv.engine.metrics import ConfusionMatrix, TopK


def test_segmentation_metrics_by_hand_with_ignore():
    target = torch.tensor([[0, 1, 255], [1, 2, 2]])
    pred = torch.tensor([[0, 1, 2], [0, 2, 1]])
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(target, pred)
    assert cm.mat.tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    m = cm.segmentation_metrics(["a", "b", "c"])
    # IoU: a 1/(1+2-1)=0.5, b 1/(2+2-1)=1/3, c 1/(2+1-1)=0.5
    assert m["per_class_iou"]["a"] == pytest.approx(50.0)
    assert m["per_class_iou"]["b"] == pytest.approx(100 / 3, abs=1e-3)
    assert m["miou"] == pytest.approx((50 + 100 / 3 + 50) / 3, abs=1e-3)
    assert m["pixel_acc"] == pytest.approx(60.0)  # 3 of 5 valid pixels; the 255 pixel is not counted
    assert m["mean_acc"] == pytest.approx((100 + 50 + 50) / 3)
    assert m["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]  # rows truth, the ignored pixel left out


def test_absent_class_is_left_out_of_the_mean():
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1]))
    m = cm.segmentation_metrics()
    assert m["per_class_iou"]["2"] is None
    assert m["miou"] == pytest.approx(100.0)


def test_classification_top1_top5_and_per_class():
    logits = torch.tensor([[5.0, 1, 0, 0, 0, 0], [0, 1, 5, 0, 0, 0], [0, 5, 1, 0, 0, 0], [-1.0, 1, 2, 3, 4, 5]])
    target = torch.tensor([0, 1, 1, 0])
    cm, topk = ConfusionMatrix(6, ignore_index=None), TopK(5)
    cm.update(target, logits.argmax(1))
    topk.update(target, logits)
    m = cm.classification_metrics()
    assert m["top1"] == pytest.approx(50.0)
    assert m["per_class_acc"]["0"] == pytest.approx(50.0)
    assert m["per_class_acc"]["1"] == pytest.approx(50.0)
    assert math.isclose(topk.value(), 75.0)  # last row: the true class has the lowest logit
    assert sum(map(sum, m["confusion_matrix"])) == 4
