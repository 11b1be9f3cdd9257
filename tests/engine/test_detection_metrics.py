"""COCO detection metrics checked against hand-computed values (pycocotools does the matching)."""
import numpy as np
import pytest
import torch
import torch.distributed as dist

from slimcv.engine.detection_metrics import DetectionMAP, detection_map
from slimcv.errors import SlimcvError

pytest.importorskip("pycocotools")

GT = [0.0, 0.0, 10.0, 10.0]  # area 100: a COCO "small" object
FAR = [50.0, 50.0, 60.0, 60.0]  # overlaps nothing


def pred(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels, dtype=torch.int64)}


def target(boxes, labels, iscrowd=None):
    t = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
         "labels": torch.tensor(labels, dtype=torch.int64)}
    if iscrowd is not None:
        t["iscrowd"] = torch.tensor(iscrowd, dtype=torch.bool)
    return t


def test_perfect_boxes_score_100_everywhere():
    # three images, two classes, all boxes 100x100 (area 10000 > 96**2: "large")
    gts = [target([[0, 0, 100, 100], [150, 150, 250, 250]], [0, 1]),
           target([[10, 10, 110, 110]], [1]),
           target([[0, 0, 100, 100], [200, 0, 300, 100], [0, 200, 100, 300]], [0, 0, 1])]
    preds = [pred(t["boxes"].tolist(), [1.0] * len(t["labels"]), t["labels"].tolist()) for t in gts]
    m = detection_map(preds, gts, 2, ["cat", "dog"])
    assert m["map"] == pytest.approx(100) and m["map50"] == pytest.approx(100) and m["map75"] == pytest.approx(100)
    assert m["mar100"] == pytest.approx(100) and m["map_large"] == pytest.approx(100)
    assert m["map_small"] is None and m["map_medium"] is None  # no objects of those sizes
    assert m["per_class_ap"] == {"cat": 100.0, "dog": 100.0} and m["per_class_ap50"] == {"cat": 100.0, "dog": 100.0}
    assert m["images"] == 3 and m["objects"] == 6
    assert set(m) == {"map", "map50", "map75", "map_small", "map_medium", "map_large", "mar100", "per_class_ap",
                      "per_class_ap50", "pr_curve", "images", "objects"}


@pytest.mark.parametrize("y2, hits", [(8.0, 7), (7.8, 6), (4.0, 0)])
def test_shifted_box_hits_the_thresholds_its_iou_reaches(y2, hits):
    # IoU with GT = 10*y2 / 100: 0.8 reaches .50 ... .80 (7 of 10; COCO matches at IoU >= threshold and 0.8 is
    # exactly its threshold in floating point), 0.78 reaches .50 ... .75 (6), 0.4 none
    m = detection_map([pred([[0, 0, 10, y2]], [0.9], [0])], [target([GT], [0])], 1)
    assert m["map"] == pytest.approx(100 * hits / 10)
    assert m["map50"] == pytest.approx(100 if hits else 0)
    assert m["map75"] == pytest.approx(100 if hits >= 6 else 0)
    assert m["map_small"] == pytest.approx(m["map"]) and m["map_large"] is None
    assert m["per_class_ap"]["0"] == pytest.approx(100 * hits / 10)


def test_missed_object_gives_51_of_101_recall_points():
    # recall reaches 0.5 at precision 1; COCO samples precision at recall 0, .01, ..., 1: the 51 points <= .5 get 1
    gts = [target([GT, [20, 20, 30, 30]], [0, 0])]
    m = detection_map([pred([GT], [1.0], [0])], gts, 1)
    assert m["map"] == pytest.approx(100 * 51 / 101) and m["map50"] == pytest.approx(100 * 51 / 101)
    assert m["mar100"] == pytest.approx(50)
    curve = m["pr_curve"]["0"]
    assert curve["recall"] == pytest.approx([i / 100 for i in range(101)])
    assert curve["precision"] == [1.0] * 51 + [0.0] * 50


def test_score_order_of_a_false_positive_matters():
    # FP ranked first: precision 0 then 1/2 at recall 1; interpolated, 1/2 at every recall point -> AP 50
    above = detection_map([pred([FAR, GT], [0.9, 0.8], [0, 0])], [target([GT], [0])], 1)
    below = detection_map([pred([FAR, GT], [0.7, 0.8], [0, 0])], [target([GT], [0])], 1)
    assert above["map"] == pytest.approx(50) and above["map50"] == pytest.approx(50)
    assert below["map"] == pytest.approx(100)
    assert above["pr_curve"]["0"]["precision"] == [0.5] * 101


def test_mean_is_over_classes_and_per_class_ap_follows_precision():
    gts = [target([GT], [0]), target([GT], [1])]
    preds = [pred([GT], [1.0], [0]), pred([FAR, GT], [0.9, 0.8], [1, 1])]
    m = detection_map(preds, gts, 2, ["a", "b"])
    assert m["per_class_ap"] == {"a": 100.0, "b": 50.0}
    assert m["map"] == pytest.approx(75)


def test_crowd_objects_are_neither_found_nor_missed():
    base = detection_map([pred([GT], [0.8], [0])], [target([GT], [0])], 1)
    assert base["map"] == pytest.approx(100)
    crowd = [20.0, 20.0, 120.0, 120.0]
    # a crowd region nobody detects is not a missed object (counted, it would halve recall)
    m = detection_map([pred([GT], [0.8], [0])], [target([GT, crowd], [0, 0], [False, True])], 1)
    assert m["map"] == pytest.approx(100) and m["mar100"] == pytest.approx(100) and m["objects"] == 1
    # detections on it, ranked above the true positive, are not false positives (counted, AP would drop to 1/3);
    # the small one has a plain IoU of 0.01 but COCO measures crowd overlap as intersection / detection area
    dets = pred([[20, 20, 120, 120], [30, 30, 40, 40], GT], [0.95, 0.9, 0.8], [0, 0, 0])
    m = detection_map([dets], [target([GT, crowd], [0, 0], [False, True])], 1)
    assert m["map"] == pytest.approx(base["map"]) and m["map50"] == pytest.approx(base["map50"])
    assert m["per_class_ap"] == base["per_class_ap"]
    # the same boxes without the crowd flag: a missed object and two detections competing for it
    plain = detection_map([dets], [target([GT, crowd], [0, 0], [False, False])], 1)
    assert plain["map"] < 100 and plain["objects"] == 2


def test_no_detections_scores_zero():
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    m = detection_map([empty, empty], [target([GT], [0]), target([], [])], 3, ["a", "b", "c"])
    assert m["map"] == 0 and m["map50"] == 0 and m["mar100"] == 0
    assert m["per_class_ap"] == {"a": 0.0, "b": None, "c": None}
    assert m["pr_curve"]["a"]["precision"] == [0.0] * 101 and m["pr_curve"]["b"] is None
    nothing = DetectionMAP(2).compute()
    assert nothing["map"] is None and nothing["images"] == 0 and nothing["per_class_ap"] == {"0": None, "1": None}


def test_class_without_ground_truth_is_left_out_of_the_mean():
    # class 1 has no ground truth; even a detection of it does not count against the mean (COCO convention)
    m = detection_map([pred([GT, FAR], [0.9, 0.95], [0, 1])], [target([GT], [0])], 2)
    assert m["per_class_ap"] == {"0": 100.0, "1": None} and m["per_class_ap50"] == {"0": 100.0, "1": None}
    assert m["map"] == pytest.approx(100)


def test_torch_and_numpy_inputs_agree():
    t_preds = [pred([FAR, GT, [0, 0, 10, 8]], [0.9, 0.8, 0.3], [0, 0, 1])]
    t_gts = [target([GT, [0, 0, 10, 10]], [0, 1], [False, False])]
    t_preds[0]["boxes"].requires_grad_(True)
    np_preds = [{k: v.detach().numpy() for k, v in p.items()} for p in t_preds]
    np_gts = [{"boxes": np.array([GT, GT]), "labels": np.array([0, 1]), "iscrowd": np.array([0, 0])}]
    list_gts = [{"boxes": [GT, GT], "labels": [0, 1]}]
    a, b, c = (detection_map(p, g, 2) for p, g in [(t_preds, t_gts), (np_preds, np_gts), (np_preds, list_gts)])
    assert a == b == c
    assert a["per_class_ap"] == {"0": 50.0, "1": 70.0}


def test_accumulates_over_updates():
    m = DetectionMAP(1)
    m.update([pred([GT], [1.0], [0])], [target([GT], [0])])
    m.update([pred([], [], [])], [target([GT], [0])])
    assert m.compute()["map"] == pytest.approx(100 * 51 / 101)


def test_reduce_gathers_every_rank(monkeypatch):
    # two simulated ranks: one found its object, the other missed it -> the joint result, on every rank
    ranks = [DetectionMAP(1), DetectionMAP(1)]
    ranks[0].update([pred([GT], [1.0], [0])], [target([GT], [0])])
    ranks[1].update([pred([], [], [])], [target([GT], [0])])

    def all_gather_object(out, obj):
        out[:] = [(r.preds, r.targets) for r in ranks]

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_gather_object", all_gather_object)
    ranks[1].reduce_from_all_processes()
    m = ranks[1].compute()
    assert m["images"] == 2 and m["map"] == pytest.approx(100 * 51 / 101)


@pytest.mark.parametrize("bad, match", [
    ({"boxes": [[0, 0, 1]], "scores": [1.0], "labels": [0]}, "shape"),
    ({"boxes": [GT], "scores": [1.0], "labels": [3]}, "0-based"),
    ({"boxes": [GT], "scores": [1.0, 0.5], "labels": [0]}, "one score"),
    ({"boxes": [GT], "labels": [0]}, "scores"),
])
def test_bad_inputs_raise_an_actionable_error(bad, match):
    with pytest.raises(SlimcvError, match=match):
        DetectionMAP(2).update([bad], [target([GT], [0])])
