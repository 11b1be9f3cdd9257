"""Structured pruning of a detector: backbone, neck and head towers shrink, the score and box layers keep their
layout, the GroupNorms stay valid, and the pruned folder reloads with the same boxes."""
from __future__ import annotations

import pytest
import torch
import torchvision

import slimcv
from slimcv.errors import SlimcvError
from slimcv.models import create_model
from slimcv.prune.structured import prune_structured

from tests.conftest import TINY_DETECTION_DATA


def test_a_pruned_detector_keeps_its_head_layout_and_reloads_with_equal_boxes(tiny_detector_run, tmp_path):
    result = slimcv.prune(str(tiny_detector_run), data=TINY_DETECTION_DATA, remove=0.5, target="macs",
                          finetune_epochs=1, distill=[{"name": "kd"}], out_dir=str(tmp_path / "pruned"),
                          progress=False)
    assert result.after["macs"] <= 0.55 * result.before["macs"] and "map" in result.after
    source = slimcv.load(tiny_detector_run)
    head, old = result.model.head, source.head
    assert head.classification_head.cls_logits.out_channels == old.classification_head.cls_logits.out_channels
    assert head.regression_head.bbox_reg.out_channels == 4 and head.regression_head.bbox_ctrness.out_channels == 1
    for m in result.model.modules():
        if isinstance(m, torch.nn.GroupNorm):
            assert m.num_channels % m.num_groups == 0
    again = slimcv.load(tmp_path / "pruned")
    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        a, b = result.model.eval()(x), again.eval()(x)
    for da, db in zip(a, b):
        torch.testing.assert_close(da["boxes"], db["boxes"])
        torch.testing.assert_close(da["scores"], db["scores"])


def test_pruning_a_detector_shrinks_every_part_but_its_outputs():
    torch.manual_seed(0)
    net = create_model("slimdet_s", 3, size=64).eval()
    x = torch.rand(1, 3, 64, 64)
    result = prune_structured(net, x, num_classes=3, ratio=0.5, round_to=8)
    assert result.macs_after < 0.4 * result.macs_before
    assert net.backbone.fpn.layer_blocks[0][0].out_channels == 32  # the neck, 64 wide, halved
    assert net.head.classification_head.conv[0].out_channels == 32  # the head's towers too
    assert net.head.classification_head.cls_logits.out_channels == 4  # 3 classes and the background
    assert len(net(x)[0]["boxes"]) > 0


def test_a_two_stage_detector_is_refused_in_one_sentence():
    net = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None,
                                                                             num_classes=3).eval()
    with pytest.raises(SlimcvError, match="two-stage"):
        prune_structured(net, torch.rand(1, 3, 64, 64), num_classes=3, ratio=0.3)


def test_taylor_importance_is_refused_for_a_detector(tiny_detector_run):
    with pytest.raises(SlimcvError, match="Taylor"):
        slimcv.prune(str(tiny_detector_run), data=TINY_DETECTION_DATA, remove=0.3, importance="taylor",
                     finetune_epochs=0, progress=False)
