"""Object-detection datasets in the layouts their users already have: Pascal VOC XML, COCO JSON, YOLO txt.

Boxes are XYXY in pixels, 0-based continuous coordinates (a box covering pixel columns 0..9 is x1=0, x2=10); labels
are 0-based class indices without a background class; ``iscrowd`` marks objects kept out of the metric (VOC's
``difficult``, COCO's ``iscrowd``).
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import Dataset
from torchvision import tv_tensors

from slimcv.data._base import DatasetInfo, load_rgb
from slimcv.data._registry import DATASETS
from slimcv.data.segmentation import IMAGE_EXTS, _require_dir
from slimcv.errors import SlimcvError

DETECTION_AUGMENT = ("scale_crop", "hflip", "color_jitter")
TOLERANCE = 1.0  # pixels a box may reach past the image edge (annotation tools round); such a box is clamped
YOLO_TOLERANCE = 0.01  # the same for YOLO's fractions of the image, checked before the image size is known


@dataclass(eq=False)
class Annotation:
    """The objects of one image: XYXY boxes (pixels, or fractions of the image when ``normalized``)."""

    boxes: np.ndarray  # (K, 4) float32
    labels: np.ndarray  # (K,) int64, 0-based class indices
    iscrowd: np.ndarray  # (K,) bool: VOC difficult / COCO iscrowd, kept out of the metric
    source: str = ""  # the annotation file (and entry), named in errors
    written: tuple[str, ...] | None = None  # each box as its file writes it, for error messages
    normalized: bool = False  # YOLO: coordinates are fractions of the image width and height

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, np.int64).reshape(-1)
        self.iscrowd = np.asarray(self.iscrowd, np.bool_).reshape(-1)
        if not len(self.boxes) == len(self.labels) == len(self.iscrowd):
            raise ValueError("boxes, labels and iscrowd must have one entry per object")


def empty_annotation(source: str = "", normalized: bool = False) -> Annotation:
    """An image without objects."""
    return Annotation(np.zeros((0, 4)), [], [], source=source, normalized=normalized)


def check_boxes(boxes: np.ndarray, height: int, width: int, where: str,
                written: Sequence[str] | None = None, tolerance: float = TOLERANCE) -> np.ndarray:
    """The boxes clamped to the image; a box without area, or past the edge by more than ``tolerance``, raises."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    x1, y1, x2, y2 = boxes.T
    bad = np.flatnonzero(~np.isfinite(boxes).all(1) | (x2 <= x1) | (y2 <= y1))
    if bad.size:
        raise SlimcvError(f"Box {_shown(boxes, written, bad[0])} in {where} has no area (x2 <= x1 or y2 <= y1); "
                          "fix or remove that object.")
    out = (x1 < -tolerance) | (y1 < -tolerance) | (x2 > width + tolerance) | (y2 > height + tolerance)
    clamped = np.clip(boxes, 0, np.array([width, height, width, height], np.float32))
    out |= (clamped[:, 2] <= clamped[:, 0]) | (clamped[:, 3] <= clamped[:, 1])  # only the part past the edge
    if out.any():
        raise SlimcvError(f"Box {_shown(boxes, written, np.flatnonzero(out)[0])} in {where} lies outside its "
                          f"{width}x{height} image; fix the coordinates or remove that object.")
    return clamped


def _shown(boxes: np.ndarray, written: Sequence[str] | None, i: int) -> str:
    if written is not None and i < len(written):
        return written[i]
    return "[" + ", ".join(f"{v:g}" for v in boxes[i].tolist()) + "] (x1, y1, x2, y2)"


def make_target(boxes, labels, iscrowd, canvas_size: tuple[int, int], image_id: int) -> dict[str, Any]:
    """The target of one image: XYXY BoundingBoxes (float32), int64 labels and iscrowd, and the sample index."""
    return {
        "boxes": tv_tensors.BoundingBoxes(torch.tensor(np.asarray(boxes, np.float32).reshape(-1, 4)), format="XYXY",
                                          canvas_size=tuple(canvas_size)),
        "labels": torch.tensor(np.asarray(labels, np.int64).reshape(-1)),
        "iscrowd": torch.tensor(np.asarray(iscrowd, np.int64).reshape(-1)),
        "image_id": int(image_id),
    }


def detection_info(name: str, class_names: Sequence[str], native_size: tuple[int, int] | None = None) -> DatasetInfo:
    """Metadata of a detection dataset: no background class; the detector normalises inside the model."""
    if not class_names:
        raise SlimcvError(f"Detection dataset {name!r} has no classes; give class_names in its options.")
    return DatasetInfo(name=name, task="detection", class_names=tuple(str(n) for n in class_names),
                       mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), default_augment=DETECTION_AUGMENT,
                       native_size=native_size)


class DetectionFiles(Dataset):
    """(image file, Annotation) samples; yields ``transform(Image, target)`` with the target dict of ``make_target``.

    ``errors`` maps a sample index to the problem found in its annotation: loading it raises that message (so
    ``check-data`` lists every bad file instead of stopping at the first)."""

    def __init__(self, samples: Sequence[tuple[Path, Annotation | None]], info: DatasetInfo,
                 transform: Callable | None = None, errors: dict[int, str] | None = None) -> None:
        if not samples:
            raise SlimcvError(f"Dataset {info.name!r} is empty: no images were found.")
        self.samples = list(samples)
        self.info = info
        self.transform = transform
        self.errors = dict(errors or {})
        self.decoded = None  # a data.memory.DecodedStore once the decoded samples are kept in memory

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[tv_tensors.Image, dict[str, Any]]:
        """The untransformed sample: uint8 image (3,H,W) and its target dict (boxes in pixels of that image)."""
        if self.decoded is not None and index in self.decoded:
            return self.decoded.get(index)
        if index in self.errors:
            raise SlimcvError(self.errors[index])
        path, ann = self.samples[index]
        img = load_rgb(path)
        h, w = img.height, img.width
        boxes = ann.boxes * np.array([w, h, w, h], np.float32) if ann.normalized else ann.boxes
        boxes = check_boxes(boxes, h, w, ann.source or str(path), ann.written)
        image = tv_tensors.Image(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
        return image, make_target(boxes, ann.labels, ann.iscrowd, (h, w), index)

    def __getitem__(self, index: int):
        image, target = self.load(index)
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target


def _attempt(fn: Callable, *args: Any) -> Any:
    """``fn(*args)``, or the message of the SlimcvError it raised."""
    try:
        return fn(*args)
    except SlimcvError as e:
        return str(e)


def _dataset(entries: list[tuple[Path, Annotation | str]], info: DatasetInfo, transform: Callable | None,
             strict: bool) -> DetectionFiles:
    """Entries whose annotation is a message are bad: strict raises the first, else loading them raises."""
    errors = {i: a for i, (_, a) in enumerate(entries) if isinstance(a, str)}
    if errors and strict:
        raise SlimcvError(next(iter(errors.values())))
    samples = [(p, None if isinstance(a, str) else a) for p, a in entries]
    return DetectionFiles(samples, info, transform, errors)


def _names_option(class_names: Sequence[str] | str | None) -> list[str] | None:
    if class_names is None:
        return None
    names = [class_names] if isinstance(class_names, str) else [str(n) for n in class_names]
    if len(set(names)) != len(names):
        raise SlimcvError(f"class_names {names} repeat a name; give each class once.")
    return names


def _known(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names[:8]) + (", ..." if len(names) > 8 else "")


def _find_image(folder: Path, stem: str) -> Path:
    """``folder/stem.jpg``, or the image with that stem in another format (a missing one fails on load)."""
    path = folder / f"{stem}.jpg"
    if not path.is_file():
        for ext in IMAGE_EXTS:
            if (folder / f"{stem}{ext}").is_file():
                return folder / f"{stem}{ext}"
    return path


# ---------------------------------------------------------------- Pascal VOC


@dataclass
class _VocFile:
    path: Path
    size: tuple[int, int] | None  # (height, width) from <size>; None when missing or zero
    objects: list[tuple[str, tuple[float, float, float, float], bool]]  # name, (xmin, ymin, xmax, ymax), difficult


def _read_voc_xml(path: Path) -> _VocFile:
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise SlimcvError(f"Cannot parse VOC annotation {path} ({e}); fix or re-export that XML file.") from e
    objects = []
    for obj in root.findall("object"):
        name = (obj.findtext("name") or "").strip()
        try:
            coords = tuple(float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            raise SlimcvError(f"Object {name!r} in VOC annotation {path} has no readable bndbox "
                              "xmin/ymin/xmax/ymax; fix that XML file.") from None
        objects.append((name, coords, (obj.findtext("difficult") or "0").strip() in ("1", "true")))
    size = (_number(root.findtext("size/height")), _number(root.findtext("size/width")))
    return _VocFile(path, size if all(size) else None, objects)


def _number(text: str | None) -> int:
    try:
        return int(float(text or 0))
    except ValueError:
        return 0


def _voc_annotation(f: _VocFile | str, index: dict[str, int]) -> Annotation:
    if isinstance(f, str):  # the XML file could not be read
        raise SlimcvError(f)
    unknown = [name for name, _, _ in f.objects if name not in index]
    if unknown:
        raise SlimcvError(f"VOC annotation {f.path} has an object of unknown class {unknown[0]!r} (known: "
                          f"{_known(list(index))}); fix the name or add it to class_names.")
    raw = np.array([c for _, c, _ in f.objects], np.float32).reshape(-1, 4)
    written = tuple("xmin={:g} ymin={:g} xmax={:g} ymax={:g}".format(*c) for _, c, _ in f.objects)
    boxes = raw - np.array([1, 1, 0, 0], np.float32)  # VOC is 1-based and inclusive: pixel xmin..xmax
    if f.size is not None:
        boxes = check_boxes(boxes, *f.size, str(f.path), written)
    return Annotation(boxes, [index[name] for name, _, _ in f.objects], [d for _, _, d in f.objects],
                      source=str(f.path), written=written)


def _voc_base(base: Path) -> Path:
    if (base / "Annotations").is_dir():
        return base
    for sub in ("VOC2012", "VOC2007", "VOCdevkit/VOC2012", "VOCdevkit/VOC2007"):
        if (base / sub / "Annotations").is_dir():
            return base / sub
    raise SlimcvError(f"VOC detection folder {base} has no Annotations/; point voc-detection at the folder holding "
                      "Annotations/, JPEGImages/ and ImageSets/Main/.")


@DATASETS.register("voc-detection", task="detection")
def voc_detection(root: str | None, split: str = "train", transform: Callable | None = None,
                  class_names: Sequence[str] | None = None, strict: bool = True) -> DetectionFiles:
    """Pascal VOC boxes: Annotations/*.xml, JPEGImages/, ImageSets/Main/{split}.txt; difficult is iscrowd."""
    base = _voc_base(_require_dir(root, "voc-detection", "the folder holding Annotations/, JPEGImages/ and "
                                  "ImageSets/Main/"))
    listing = base / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        raise SlimcvError(f"VOC list file {listing} is missing; expected ImageSets/Main/{split}.txt, one id a line.")
    ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    parsed = {p.stem: _attempt(_read_voc_xml, p) for p in sorted((base / "Annotations").glob("*.xml"))}
    names = _names_option(class_names)
    if names is None:  # every XML file, not only this split's: train and val must agree on the class indices
        names = sorted({name for f in parsed.values() if not isinstance(f, str) for name, _, _ in f.objects})
    index = {name: i for i, name in enumerate(names)}
    entries = []
    for i in ids:
        f = parsed.get(i, f"VOC annotation {base / 'Annotations' / f'{i}.xml'} is missing for id {i!r} listed in "
                          f"{listing}; add the XML file or remove the id from the list.")
        entries.append((_find_image(base / "JPEGImages", i), _attempt(_voc_annotation, f, index)))
    return _dataset(entries, detection_info("voc-detection", names), transform, strict)


# ---------------------------------------------------------------- COCO


def _coco_json(base: Path, split: str, annotations: str | None) -> Path:
    if annotations:
        path = Path(annotations).expanduser()
        path = path if path.is_absolute() or path.is_file() else base / path
        if not path.is_file():
            raise SlimcvError(f"COCO annotation file {path} does not exist; check the option annotations.")
        return path
    found = sorted((base / "annotations").glob(f"instances_{split}*.json"))
    if not found:
        raise SlimcvError(f"No COCO annotation file {base / 'annotations'}/instances_{split}*.json; put it there or "
                          "give its path in the option annotations.")
    return found[0]


def _coco_images(base: Path, split: str, images: str | None, ann_path: Path) -> Path:
    if images:
        path = Path(images).expanduser()
        path = path if path.is_absolute() or path.is_dir() else base / path
        if not path.is_dir():
            raise SlimcvError(f"COCO images folder {path} does not exist; check the option images.")
        return path
    named = ann_path.stem.removeprefix("instances_")  # instances_val2017.json -> val2017
    for sub in (split, f"images/{split}", f"{split}2017", named, f"images/{named}"):
        if (base / sub).is_dir():
            return base / sub
    raise SlimcvError(f"No COCO images folder for split {split!r} in {base} (looked for {split}/, images/{split}/ "
                      f"and {split}2017/); give its path in the option images.")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SlimcvError(f"Cannot read COCO annotation file {path} ({e}); fix or re-export it.") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise SlimcvError(f"COCO annotation file {path} has no 'images' list; give an instances_*.json file.")
    return data


def _coco_annotation(image: dict, anns: list[dict], label: dict[int, int], ann_path: Path, path: Path) -> Annotation:
    where = f"{ann_path} (image {image.get('file_name')})"
    if not path.is_file():
        raise SlimcvError(f"Image file {path} listed in {ann_path} does not exist; check the images folder (option "
                          "images) or remove the image from the JSON.")
    for a in anns:
        if a.get("category_id") not in label:
            raise SlimcvError(f"Annotation {a.get('id')} in {ann_path} has category_id {a.get('category_id')!r}, "
                              "which is not in its 'categories'; add the category or fix the annotation.")
    try:
        xywh = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
    except (KeyError, TypeError, ValueError):
        raise SlimcvError(f"An annotation of {where} has no bbox [x, y, width, height]; fix that JSON entry.") from None
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    written = tuple(f"bbox {list(a['bbox'])}" for a in anns)
    height, width = _number(str(image.get("height", 0))), _number(str(image.get("width", 0)))
    if height and width:
        boxes = check_boxes(boxes, height, width, where, written)
    # no ``written`` kept: COCO has ~860k boxes, and a box past the real image on load is shown as x1, y1, x2, y2
    return Annotation(boxes, [label[a["category_id"]] for a in anns], [bool(a.get("iscrowd", 0)) for a in anns],
                      source=where)


@DATASETS.register("coco", task="detection")
def coco(root: str | None, split: str = "train", transform: Callable | None = None, annotations: str | None = None,
         images: str | None = None, strict: bool = True) -> DetectionFiles:
    """COCO JSON: annotations/instances_{split}*.json; images in {split}/, images/{split}/ or {split}2017/."""
    base = _require_dir(root, "coco", "the folder holding annotations/ and the image folders")
    ann_path = _coco_json(base, split, annotations)
    data = _read_json(ann_path)
    img_dir = _coco_images(base, split, images, ann_path)
    try:
        cats = sorted(data.get("categories") or [], key=lambda c: c["id"])
        label = {c["id"]: i for i, c in enumerate(cats)}
        info = detection_info("coco", [c["name"] for c in cats])
        per_image: dict[Any, list[dict]] = {im["id"]: [] for im in data["images"]}
        for a in data.get("annotations") or []:
            if a["image_id"] not in per_image:
                raise SlimcvError(f"Annotation {a.get('id')} in {ann_path} refers to image id {a['image_id']!r}, "
                                  "which is not in its 'images'; fix or remove that annotation.")
            per_image[a["image_id"]].append(a)
        entries = [(img_dir / im["file_name"], im) for im in data["images"]]
    except (KeyError, TypeError) as e:
        raise SlimcvError(f"COCO annotation file {ann_path} lacks the field {e}; give an instances_*.json file.") from e
    entries = [(p, _attempt(_coco_annotation, im, per_image[im["id"]], label, ann_path, p)) for p, im in entries]
    return _dataset(entries, info, transform, strict)


# ---------------------------------------------------------------- YOLO


def _yolo_dirs(base: Path, split: str) -> tuple[Path, Path]:
    splits = (split, "valid") if split == "val" else (split,)  # Roboflow exports name the val split 'valid'
    for s in splits:
        for img_dir, label_dir in ((base / "images" / s, base / "labels" / s),
                                   (base / s / "images", base / s / "labels")):
            if img_dir.is_dir():
                if not label_dir.is_dir():
                    raise SlimcvError(f"YOLO labels folder {label_dir} is missing; put one <image stem>.txt per image "
                                      "there (an image without a file has no objects).")
                return img_dir, label_dir
    raise SlimcvError(f"No YOLO images folder for split {split!r} in {base}; expected images/{split}/ with "
                      f"labels/{split}/, or {split}/images/ with {split}/labels/.")


def _yolo_names(base: Path) -> list[str]:
    for path in (base / "data.yaml", base / "dataset.yaml"):
        if path.is_file():
            try:
                names = (yaml.safe_load(path.read_text()) or {}).get("names")
            except (yaml.YAMLError, AttributeError) as e:
                raise SlimcvError(f"Cannot read {path} ({e}); it should map names: to a list of class names.") from e
            if isinstance(names, dict):
                if sorted(names) != list(range(len(names))):
                    raise SlimcvError(f"names in {path} should be numbered 0..{len(names) - 1}; fix its keys.")
                names = [names[i] for i in range(len(names))]
            if not isinstance(names, list) or not names:
                raise SlimcvError(f"{path} has no names: list of class names; add one (e.g. names: [cat, dog]).")
            return [str(n) for n in names]
    for path in [base / "classes.txt", *sorted(base.glob("*.names"))]:
        if path.is_file():
            return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    raise SlimcvError(f"YOLO dataset {base} has no class names; add data.yaml with names: [...], a classes.txt, or "
                      "give class_names in its options.")


def _read_yolo_txt(path: Path, num_classes: int) -> Annotation:
    if not path.is_file():
        return empty_annotation(str(path), normalized=True)
    labels, boxes = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            c, cx, cy, w, h = (float(v) for v in parts)
            if c != int(c):
                raise ValueError
        except ValueError:
            raise SlimcvError(f"{path}:{n} should hold 'class cx cy w h' (an integer and 4 numbers), got "
                              f"{line.strip()!r}; fix that line.") from None
        if not 0 <= c < num_classes:
            raise SlimcvError(f"{path}:{n} has class {int(c)}, but there are {num_classes} class names "
                              f"(0..{num_classes - 1}); fix the label or the names in data.yaml.")
        box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        if w <= 0 or h <= 0 or min(box) < -YOLO_TOLERANCE or max(box) > 1 + YOLO_TOLERANCE:
            raise SlimcvError(f"{path}:{n} has a box reaching outside the image or without area "
                              "(cx, cy, w, h are fractions of the image in [0, 1]); fix that line.")
        labels.append(int(c))
        boxes.append(np.clip(box, 0.0, 1.0))
    return Annotation(np.array(boxes).reshape(-1, 4), labels, np.zeros(len(labels), bool), source=str(path),
                      normalized=True)


@DATASETS.register("yolo", task="detection")
def yolo(root: str | None, split: str = "train", transform: Callable | None = None,
         class_names: Sequence[str] | None = None, strict: bool = True) -> DetectionFiles:
    """YOLO txt: images/{split}/ and labels/{split}/ (or {split}/images, {split}/labels); names in data.yaml."""
    base = _require_dir(root, "yolo", "the folder holding images/ and labels/ (or train/ and val/) and data.yaml")
    img_dir, label_dir = _yolo_dirs(base, split)
    names = _names_option(class_names) or _yolo_names(base)
    images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    entries = [(p, _attempt(_read_yolo_txt, label_dir / f"{p.stem}.txt", len(names))) for p in images]
    return _dataset(entries, detection_info("yolo", names), transform, strict)
