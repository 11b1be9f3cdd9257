"""Detection data: VOC/COCO/YOLO loaders on tiny trees, real Raccoon, synthetic boxes, box-aware presets, loaders."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from slimcv.cli import main
from slimcv.data import build_dataset, collate_pad, load_data, make_loader
from slimcv.data.check import scan
from slimcv.data.detection import check_boxes
from slimcv.data.presets import DetectionPresetEval, DetectionPresetTrain
from slimcv.data.synthetic import _draw, _shape_boxes
from slimcv.errors import SlimcvError


def one_sentence(message: str) -> str:
    """The message, asserted to be one line and one sentence (no '. X' inside, a full stop at the end)."""
    assert "\n" not in message and message.endswith("."), message
    assert not re.search(r"[.;]\s+[A-Z]", message), message
    return message


def raises_one_sentence(fn, *needles: str) -> str:
    with pytest.raises(SlimcvError) as e:
        fn()
    msg = one_sentence(str(e.value))
    for n in needles:
        assert n in msg, msg
    return msg


# ---------------------------------------------------------------- Pascal VOC


def voc_xml(objects, size: tuple[int, int] | None = (40, 30)) -> str:
    """``objects``: (name, (xmin, ymin, xmax, ymax), difficult); ``size`` is (width, height)."""
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    objs = "".join(
        f"<object><name>{name}</name><difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for name, b, d in objects)
    return f"<annotation><filename>x.jpg</filename>{size_xml}{objs}</annotation>"


@pytest.fixture
def make_voc(tmp_path, files):
    """Write a VOC tree: ``samples`` maps id -> (objects, (width, height)); ``splits`` maps split -> ids."""

    def make(samples: dict, splits: dict[str, list[str]], root: Path | None = None) -> Path:
        root = root or tmp_path / "voc"
        for i, (objects, (w, h)) in samples.items():
            files.rgb(root / "JPEGImages" / f"{i}.jpg", files.random_image(h, w))
            (root / "Annotations").mkdir(parents=True, exist_ok=True)
            (root / "Annotations" / f"{i}.xml").write_text(voc_xml(objects, (w, h)))
        (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        for split, ids in splits.items():
            (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        return root

    return make


VOC_SAMPLES = {
    "a": ([("cat", (5, 6, 20, 25), False), ("dog", (21, 1, 40, 30), True)], (40, 30)),
    "b": ([("cat", (1, 1, 10, 10), False)], (32, 24)),
    "c": ([("zebra", (3, 3, 12, 12), False)], (32, 24)),  # only in val: train must still know 'zebra'
}


def test_voc_boxes_become_zero_based_and_difficult_becomes_crowd(make_voc):
    root = make_voc(VOC_SAMPLES, {"train": ["a", "b"], "val": ["c"]})
    ds = build_dataset(f"voc-detection:{root}")
    assert len(ds) == 2 and ds.info.task == "detection"
    assert ds.info.class_names == ("cat", "dog", "zebra")  # every XML, sorted; no background class
    assert ds.info.mean == (0, 0, 0) and ds.info.std == (1, 1, 1) and ds.decoded is None
    assert ds.info.default_augment == ("scale_crop", "hflip", "color_jitter")
    image, target = ds.load(0)
    assert type(image) is tv_tensors.Image and image.dtype == torch.uint8 and image.shape == (3, 30, 40)
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes) and target["boxes"].canvas_size == (30, 40)
    assert target["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY and target["boxes"].dtype == torch.float32
    assert target["boxes"].tolist() == [[4, 5, 20, 25], [20, 0, 40, 30]]  # xmin-1, ymin-1; xmax, ymax kept
    assert target["labels"].tolist() == [0, 1] and target["labels"].dtype == torch.int64
    assert target["iscrowd"].tolist() == [0, 1] and target["iscrowd"].dtype == torch.int64
    assert target["image_id"] == 0 and ds.load(1)[1]["image_id"] == 1
    val = build_dataset(f"voc-detection:{root}", "val")
    assert val.info.class_names == ds.info.class_names and val.load(0)[1]["labels"].tolist() == [2]


def test_voc_class_names_option_sets_the_order_and_rejects_unknown_classes(make_voc):
    root = make_voc(VOC_SAMPLES, {"train": ["a", "b"], "val": ["c"]})
    ds = build_dataset(f"voc-detection:{root}", class_names=["dog", "cat", "zebra"])
    assert ds.load(0)[1]["labels"].tolist() == [1, 0]
    raises_one_sentence(lambda: build_dataset(f"voc-detection:{root}", "val", class_names=["cat", "dog"]),
                        "c.xml", "unknown class 'zebra'")


def test_voc_xmin_zero_is_clamped_not_refused(make_voc):
    root = make_voc({"a": ([("cat", (0, 0, 40, 30), False)], (40, 30))}, {"train": ["a"]})
    assert build_dataset(f"voc-detection:{root}").load(0)[1]["boxes"].tolist() == [[0, 0, 40, 30]]


@pytest.mark.parametrize("box, needle", [((5, 5, 52, 20), "xmax=52"), ((5, 5, 20, 40), "ymax=40"),
                                         ((11, 5, 10, 20), "no area"), ((14, 5, 10, 20), "no area")])
def test_voc_bad_box_names_the_file_and_the_box(make_voc, box, needle):
    root = make_voc({"a": ([("cat", box, False)], (40, 30))}, {"train": ["a"]})
    raises_one_sentence(lambda: build_dataset(f"voc-detection:{root}"), "a.xml", needle)


def test_voc_box_outside_the_real_image_fails_on_load_when_size_is_missing(make_voc):
    root = make_voc({"a": ([("cat", (5, 5, 60, 20), False)], (40, 30))}, {"train": ["a"]})
    (root / "Annotations" / "a.xml").write_text(voc_xml([("cat", (5, 5, 60, 20), False)], size=None))
    ds = build_dataset(f"voc-detection:{root}")
    raises_one_sentence(lambda: ds[0], "a.xml", "xmax=60", "40x30")


def test_voc_missing_and_unparseable_xml(make_voc):
    root = make_voc(VOC_SAMPLES, {"train": ["a", "nope"], "val": ["b"]})
    raises_one_sentence(lambda: build_dataset(f"voc-detection:{root}"), "nope.xml", "is missing", "train.txt")
    (root / "Annotations" / "b.xml").write_text("<annotation><object>")
    raises_one_sentence(lambda: build_dataset(f"voc-detection:{root}", "val"), "b.xml", "Cannot parse")


def test_voc_missing_list_file(make_voc):
    root = make_voc(VOC_SAMPLES, {"train": ["a"]})
    raises_one_sentence(lambda: build_dataset(f"voc-detection:{root}", "val"), "val.txt")


# ---------------------------------------------------------------- real Raccoon (VOC layout)


RACCOON = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "raccoon").resolve()


@pytest.mark.data
@pytest.mark.skipif(not RACCOON.is_dir(), reason=f"real data {RACCOON} is not available")
def test_raccoon_real_splits_and_boxes():
    root = RACCOON
    train, val = build_dataset(f"voc-detection:{root}"), build_dataset(f"voc-detection:{root}", "val")
    assert (len(train), len(val)) == (160, 40)
    assert train.info.class_names == val.info.class_names == ("raccoon",)
    n_boxes = 0
    for ds in (train, val):
        for i in range(len(ds)):
            image, target = ds.load(i)
            b = target["boxes"]
            h, w = image.shape[-2:]
            assert b.canvas_size == (h, w) and len(b) >= 1
            assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
            assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
            assert target["labels"].tolist() == [0] * len(b)
            n_boxes += len(b)
    assert n_boxes == 217


# ---------------------------------------------------------------- COCO


def coco_json(images, annotations, categories) -> dict:
    return {"images": images, "annotations": annotations, "categories": categories}


@pytest.fixture
def coco_root(tmp_path, files):
    root = tmp_path / "coco"
    for name, (h, w) in {"1.jpg": (30, 40), "2.png": (24, 32), "3.jpg": (20, 20)}.items():
        files.rgb(root / "val2017" / name, files.random_image(h, w))
    data = coco_json(
        [{"id": 10, "file_name": "1.jpg", "height": 30, "width": 40},
         {"id": 11, "file_name": "2.png", "height": 24, "width": 32},
         {"id": 12, "file_name": "3.jpg", "height": 20, "width": 20}],  # no annotations: kept, empty target
        [{"id": 1, "image_id": 10, "category_id": 7, "bbox": [2, 3, 10, 5], "iscrowd": 0},
         {"id": 2, "image_id": 10, "category_id": 3, "bbox": [0, 0, 40, 30], "iscrowd": 1},
         {"id": 3, "image_id": 11, "category_id": 7, "bbox": [30.5, 1, 2.2, 4]}],  # past the edge by 0.7 px
        [{"id": 7, "name": "person"}, {"id": 3, "name": "bicycle"}])
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    return root


def _rewrite(root: Path, edit) -> None:
    path = root / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_coco_boxes_labels_and_empty_images(coco_root):
    ds = build_dataset(f"coco:{coco_root}", "val")
    assert len(ds) == 3 and ds.info.class_names == ("bicycle", "person")  # sorted by category id (3, 7)
    image, target = ds.load(0)
    assert image.shape == (3, 30, 40)
    assert target["boxes"].tolist() == [[2, 3, 12, 8], [0, 0, 40, 30]]  # [x, y, w, h] -> XYXY
    assert target["labels"].tolist() == [1, 0] and target["iscrowd"].tolist() == [0, 1]
    assert torch.allclose(ds.load(1)[1]["boxes"], torch.tensor([[30.5, 1, 32, 5]]))  # clamped to the width
    _, empty = ds.load(2)
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,) and empty["iscrowd"].shape == (0,)


def test_coco_options_name_the_files(coco_root, tmp_path):
    (coco_root / "val2017").rename(coco_root / "pictures")
    ann = coco_root / "annotations" / "instances_val2017.json"
    ann.rename(tmp_path / "mine.json")
    raises_one_sentence(lambda: build_dataset(f"coco:{coco_root}", "val"), "instances_val*.json", "annotations")
    ds = build_dataset(f"coco:{coco_root}", "val", annotations=str(tmp_path / "mine.json"), images="pictures")
    assert len(ds) == 3 and ds.load(1)[0].shape == (3, 24, 32)


@pytest.mark.parametrize("edit, needles", [
    (lambda d: d["annotations"].append({"id": 9, "image_id": 11, "category_id": 5, "bbox": [1, 1, 2, 2]}),
     ["Annotation 9", "category_id 5"]),
    (lambda d: d["annotations"].append({"id": 9, "image_id": 11, "category_id": 3, "bbox": [20, 20, 10, 10]}),
     ["2.png", "bbox [20, 20, 10, 10]", "outside its 32x24 image"]),
    (lambda d: d["images"][1].update(file_name="gone.png"), ["gone.png", "does not exist"]),
    (lambda d: d["annotations"].append({"id": 9, "image_id": 99, "category_id": 3, "bbox": [1, 1, 2, 2]}),
     ["image id 99"]),
])
def test_coco_bad_annotations(coco_root, edit, needles):
    _rewrite(coco_root, edit)
    raises_one_sentence(lambda: build_dataset(f"coco:{coco_root}", "val"), "instances_val2017.json", *needles)


# ---------------------------------------------------------------- YOLO


@pytest.fixture
def yolo_root(tmp_path, files):
    root = tmp_path / "yolo"
    files.rgb(root / "images" / "train" / "a.jpg", files.random_image(20, 40))
    files.rgb(root / "images" / "train" / "b.png", files.random_image(16, 16))  # no label file: no objects
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n\n2 0.125 0.25 0.25 0.5\n")
    (root / "data.yaml").write_text("names: [cat, dog, bird]\n")
    return root


def test_yolo_boxes_in_pixels_and_images_without_labels(yolo_root):
    ds = build_dataset(f"yolo:{yolo_root}")
    assert len(ds) == 2 and ds.info.class_names == ("cat", "dog", "bird")
    image, target = ds.load(0)
    assert image.shape == (3, 20, 40)
    assert target["boxes"].tolist() == [[10, 5, 30, 15], [0, 0, 10, 10]]
    assert target["labels"].tolist() == [0, 2] and target["iscrowd"].tolist() == [0, 0]
    assert ds.load(1)[1]["boxes"].shape == (0, 4)


@pytest.mark.parametrize("names_file, text", [
    ("data.yaml", "names: {0: cat, 1: dog, 2: bird}\n"),
    ("classes.txt", "cat\ndog\nbird\n"),
    ("obj.names", "cat\ndog\nbird\n"),
])
def test_yolo_names_from_yaml_dict_classes_txt_or_names_file(yolo_root, names_file, text):
    (yolo_root / "data.yaml").unlink()
    (yolo_root / names_file).write_text(text)
    assert build_dataset(f"yolo:{yolo_root}").info.class_names == ("cat", "dog", "bird")


def test_yolo_split_folder_layout_and_class_names_option(tmp_path, files):
    root = tmp_path / "y2"
    files.rgb(root / "val" / "images" / "a.jpg", files.random_image(10, 10))
    (root / "val" / "labels").mkdir(parents=True)
    (root / "val" / "labels" / "a.txt").write_text("1 0.5 0.5 1 1\n")
    ds = build_dataset(f"yolo:{root}", "val", class_names=["x", "y"])
    assert ds.info.class_names == ("x", "y") and ds.load(0)[1]["boxes"].tolist() == [[0, 0, 10, 10]]
    raises_one_sentence(lambda: build_dataset(f"yolo:{root}", "val"), "no class names", "data.yaml")


@pytest.mark.parametrize("line, needles", [
    ("3 0.5 0.5 0.1 0.1", ["a.txt:2", "class 3", "3 class names"]),
    ("0 0.9 0.5 0.4 0.2", ["a.txt:2", "outside the image"]),
    ("0 0.5 0.5 0.1", ["a.txt:2", "class cx cy w h"]),
    ("cat 0.5 0.5 0.1 0.1", ["a.txt:2", "class cx cy w h"]),
])
def test_yolo_bad_lines_name_file_and_line(yolo_root, line, needles):
    (yolo_root / "labels" / "train" / "a.txt").write_text(f"0 0.5 0.5 0.5 0.5\n{line}\n")
    raises_one_sentence(lambda: build_dataset(f"yolo:{yolo_root}"), *needles)


def test_check_data_lists_every_bad_file_and_counts_boxes(yolo_root, files, capsys):
    (yolo_root / "labels" / "train" / "c.txt").write_text("7 0.5 0.5 0.5 0.5\n")
    files.rgb(yolo_root / "images" / "train" / "c.jpg", files.random_image(8, 8))
    spec = f"yolo:{yolo_root}"
    with pytest.raises(SlimcvError, match="c.txt:1"):
        build_dataset(spec)
    r = scan(build_dataset(spec, strict=False), spec, "train")
    assert r.task == "detection" and r.samples == 3 and len(r.problems) == 1 and "c.txt:1" in r.problems[0]
    assert r.class_counts == {"cat": 1, "dog": 0, "bird": 1} and r.boxes == 2 and r.images_without_boxes == 1
    assert r.box_sizes == {"small": 2, "medium": 0, "large": 0} and r.ignored == 0
    assert main(["check-data", spec]) == 1
    out = capsys.readouterr().out
    assert "problems: 1" in out and "c.txt:1" in out and "boxes: 2" in out


def test_scan_box_sizes_and_crowd(coco_root):
    spec = f"coco:{coco_root}"
    r = scan(build_dataset(spec, "val"), spec, "val")
    # areas: 10*5=50 (small), 40*30=1200 (medium, crowd), ~1.5*4 (small); one image without boxes
    assert r.boxes == 3 and r.ignored == 1 and r.images_without_boxes == 1
    assert r.box_sizes == {"small": 2, "medium": 1, "large": 0}
    assert r.class_counts == {"bicycle": 1, "person": 2} and r.problems == []


# ---------------------------------------------------------------- synthetic shapes


def test_synthetic_detection_is_deterministic_and_boxes_fit_the_shapes():
    ds = build_dataset("synthetic-shapes:detection", "train", seed=3)
    again = build_dataset("synthetic-shapes:detection", "train", seed=3)
    val = build_dataset("synthetic-shapes:detection", "val", seed=3)
    assert ds.info.task == "detection" and ds.info.class_names == ("circle", "rectangle", "triangle")
    assert ds.info.native_size == (64, 64) and len(ds) == 512
    counts = set()
    for i in range(40):
        image, target = ds.load(i)
        image2, target2 = again.load(i)
        assert torch.equal(image, image2) and torch.equal(target["boxes"], target2["boxes"])
        assert torch.equal(target["labels"], target2["labels"])
        counts.add(len(target["boxes"]))
        # the same draws with the class mask: each box's edges touch pixels of its class, nothing of it outside
        rng = np.random.default_rng([3, i])
        img, mask, labels, shapes = _draw(rng, 64, n_shapes=int(rng.integers(1, 5)), instances=True)
        assert np.array_equal(img, image.permute(1, 2, 0).numpy())
        for box, label in zip(target["boxes"].long().tolist(), target["labels"].tolist()):
            x1, y1, x2, y2 = box
            inside = mask[y1:y2, x1:x2] == label + 1
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        for k, label in enumerate(labels):  # every shape pixel lies in a box of its class
            ys, xs = np.nonzero(shapes == k + 1)
            if ys.size >= 20:
                b = target["boxes"][target["labels"] == label]
                assert ((b[:, 0] <= xs.min()) & (b[:, 1] <= ys.min()) & (b[:, 2] > xs.max())
                        & (b[:, 3] > ys.max())).any()
    assert counts <= {1, 2, 3, 4} and len(counts) >= 3
    assert not torch.equal(ds.load(0)[0], val.load(0)[0])


def test_synthetic_instance_drawing_leaves_the_other_tasks_unchanged():
    for seed in range(5):
        plain = _draw(np.random.default_rng(seed), 64, None)
        with_inst = _draw(np.random.default_rng(seed), 64, None, instances=True)
        assert np.array_equal(plain[0], with_inst[0]) and np.array_equal(plain[1], with_inst[1])
        assert plain[2] == with_inst[2] and plain[3] is None


def test_shape_boxes_use_the_pixels_left_visible():
    shapes = np.zeros((16, 16), np.uint8)
    shapes[2:8, 2:10] = 1  # shape 1, then shape 2 covers its right part
    shapes[0:12, 6:14] = 2
    shapes[14:16, 0:3] = 3  # 6 pixels: too small to keep
    boxes, kept = _shape_boxes(shapes, 3)
    assert kept == [0, 1] and boxes.tolist() == [[2, 2, 6, 8], [6, 0, 14, 12]]


# ---------------------------------------------------------------- presets


def rect_sample(h: int = 48, w: int = 80):
    """Black image with two white rectangles: A big (label 0, not crowd), B small near the right edge (label 1,
    crowd), so a flag that stays with the wrong box shows."""
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    image[:, 10:30, 12:40] = 255
    image[:, 30:40, 66:76] = 255
    target = {"boxes": tv_tensors.BoundingBoxes(torch.tensor([[12.0, 10, 40, 30], [66, 30, 76, 40]]), format="XYXY",
                                                canvas_size=(h, w)),
              "labels": torch.tensor([0, 1]), "iscrowd": torch.tensor([0, 1]), "image_id": 5}
    return tv_tensors.Image(image), target


def assert_boxes_on_bright(image: torch.Tensor, target: dict, slack: float = 1.5) -> None:
    bright = image[0] > 0.5
    boxes = target["boxes"]
    ys, xs = torch.nonzero(bright, as_tuple=True)
    covered = torch.zeros_like(xs, dtype=torch.bool)
    for x1, y1, x2, y2 in boxes.tolist():
        covered |= (xs >= x1 - slack) & (xs < x2 + slack) & (ys >= y1 - slack) & (ys < y2 + slack)
        inner = bright[int(y1 + slack):int(y2 - slack), int(x1 + slack):int(x2 - slack)]
        assert inner.numel() == 0 or inner.float().mean() > 0.9, "box over dark pixels"
    # a box cut to under a pixel wide at the image edge is dropped (min_size=1): its sliver may stay bright
    h, w = bright.shape
    edge = (xs[~covered] <= 1) | (xs[~covered] >= w - 2) | (ys[~covered] <= 1) | (ys[~covered] >= h - 2)
    assert edge.all(), f"{int((~edge).sum())} bright pixels outside every box"


def test_train_preset_boxes_follow_the_objects():
    t = DetectionPresetTrain(size=(64, 64), augment=["scale_crop", "hflip", "shift"], mean=(0, 0, 0), std=(1, 1, 1))
    dropped = 0
    for seed in range(40):
        torch.manual_seed(seed)
        image, target = t(*rect_sample())
        assert type(image) is torch.Tensor and image.shape == (3, 64, 64) and image.dtype == torch.float32
        assert type(target["boxes"]) is torch.Tensor and target["boxes"].dtype == torch.float32
        assert target["labels"].dtype == torch.int64 and target["image_id"] == 5
        assert len(target["boxes"]) == len(target["labels"]) == len(target["iscrowd"])
        assert torch.equal(target["labels"], target["iscrowd"])  # dropped with their own box
        b = target["boxes"]
        assert (b[:, :2] >= 0).all() and (b[:, 2] <= 64).all() and (b[:, 3] <= 64).all()
        assert ((b[:, 2] - b[:, 0] >= 1) & (b[:, 3] - b[:, 1] >= 1)).all()
        assert_boxes_on_bright(image, target)
        dropped += len(b) < 2
    assert dropped >= 3, "scale_crop should crop a box away now and then, or the sanitizing is not tested"


def test_hflip_mirrors_the_boxes():
    t = DetectionPresetTrain(size=None, augment=["hflip"], mean=(0, 0, 0), std=(1, 1, 1))
    image, target = rect_sample()
    flipped = 0
    for seed in range(10):
        torch.manual_seed(seed)
        out, out_t = t(image, target)
        if torch.equal(out, image.float() / 255):
            assert out_t["boxes"].tolist() == target["boxes"].tolist()
        else:
            flipped += 1
            assert torch.equal(out, image.float().flip(-1) / 255)
            assert out_t["boxes"].tolist() == [[80 - 40, 10, 80 - 12, 30], [80 - 76, 30, 80 - 66, 40]]
    assert 0 < flipped < 10


def test_color_jitter_keeps_boxes_and_no_size_crop_works_without_boxes():
    image, target = rect_sample()
    t = DetectionPresetTrain(size=None, augment=["color_jitter"], mean=(0, 0, 0), std=(1, 1, 1))
    assert t(image, target)[1]["boxes"].tolist() == target["boxes"].tolist()
    crop = DetectionPresetTrain(size=None, augment=["scale_crop"], mean=(0, 0, 0), std=(1, 1, 1))
    empty = {"boxes": tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(48, 80)),
             "labels": torch.zeros(0, dtype=torch.int64), "iscrowd": torch.zeros(0, dtype=torch.int64), "image_id": 0}
    for seed in range(5):
        torch.manual_seed(seed)
        out, out_t = crop(image, empty)
        assert out_t["boxes"].shape == (0, 4)
        out, out_t = crop(image, target)
        assert_boxes_on_bright(out, out_t)


def test_eval_preset_resizes_boxes_and_keeps_every_one():
    image, target = rect_sample()
    target["boxes"] = tv_tensors.BoundingBoxes(torch.tensor([[12.0, 10, 40, 30], [0, 0, 1, 1]]), format="XYXY",
                                               canvas_size=(48, 80))
    out, out_t = DetectionPresetEval(size=(24, 40), mean=(0, 0, 0), std=(1, 1, 1))(image, target)
    assert out.shape == (3, 24, 40) and type(out_t["boxes"]) is torch.Tensor
    assert out_t["boxes"].tolist() == [[6, 5, 20, 15], [0, 0, 0.5, 0.5]] and out_t["labels"].tolist() == [0, 1]
    same, same_t = DetectionPresetEval(size=None, mean=(0, 0, 0), std=(1, 1, 1))(image, target)
    assert same.shape == (3, 48, 80) and same_t["boxes"].tolist() == target["boxes"].tolist()


# ---------------------------------------------------------------- load_data and loaders


def test_load_data_synthetic_detection_and_loader_collates_lists_of_dicts():
    bundle = load_data({"spec": "synthetic-shapes:detection", "options": {"length": 8}})
    assert bundle.task == "detection" and bundle.num_classes == 3
    image, target = bundle.train[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32 and type(target["boxes"]) is torch.Tensor
    loader = make_loader(bundle.train, 4, train=True, workers=0)
    images, targets = next(iter(loader))
    assert images.shape == (4, 3, 64, 64) and isinstance(targets, list) and len(targets) == 4
    assert all(set(t) == {"boxes", "labels", "iscrowd", "image_id"} for t in targets)
    val_images, val_targets = next(iter(make_loader(bundle.val, 3, train=False, workers=0)))
    assert val_images.shape == (3, 3, 64, 64) and [t["image_id"] for t in val_targets] == [0, 1, 2]


def test_collate_pads_images_of_different_sizes(make_voc):
    root = make_voc(VOC_SAMPLES, {"train": ["a", "b"]})
    bundle = load_data({"spec": f"voc-detection:{root}", "augment": [], "val_split": "train"})
    images, targets = collate_pad([bundle.val[0], bundle.val[1]])
    assert images.shape == (2, 3, 30, 40) and (images[1, :, 24:, :] == 0).all()
    assert targets[1]["boxes"].tolist() == [[0, 0, 10, 10]]


def test_check_boxes_tolerance():
    assert check_boxes(np.array([[-0.9, 0, 10.8, 5]]), 5, 10, "f.xml").tolist() == [[0, 0, 10, 5]]
    raises_one_sentence(lambda: check_boxes(np.array([[-1.5, 0, 5, 5]]), 5, 10, "f.xml"), "f.xml", "outside")
    raises_one_sentence(lambda: check_boxes(np.array([[10.5, 0, 10.9, 5]]), 5, 10, "f.xml"), "f.xml", "outside")
