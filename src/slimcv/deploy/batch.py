"""Batch prediction over files: images, folders or globs in; masks and overlays, or labels with top-k scores, out.

Needs only numpy, Pillow and the runtime of the artifact (ONNX Runtime or OpenVINO): no torch.
"""
from __future__ import annotations

import csv
import glob
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from slimcv._io import atomic_dir, atomic_write_json
from slimcv.deploy.predictor import Predictor, class_shares, load, to_pil
from slimcv.errors import SlimcvError
from slimcv.run_folder import PREDICT_JSON

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".gif")


@dataclass
class PredictResult:
    """What ``predict_files`` wrote: the output folder, one record per image, and the images it could not read."""

    out_dir: Path
    task: str
    records: list[dict[str, Any]]
    skipped: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def _written_by_us(path: Path, out: Path) -> bool:
    """True for a file in the output folder or one of its temporaries (an output folder inside an input one)."""
    p = path.resolve()
    if p.is_relative_to(out):
        return True
    return p.is_relative_to(out.parent) and p.relative_to(out.parent).parts[0].startswith(f".{out.name}.")


def expand_inputs(inputs: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """Image files from files, folders (recursively) and globs, each with the name its outputs get."""
    found: list[tuple[Path, str]] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise SlimcvError(f"Folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)}); give a folder of "
                                  "images, image files or a glob.")
            found += [(p, p.relative_to(path).as_posix()) for p in files]
        elif path.is_file():
            found.append((path, path.name))
        elif any(c in text for c in "*?["):
            files = sorted(Path(p) for p in glob.glob(text, recursive=True)
                           if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise SlimcvError(f"No image matches {text!r}; check the pattern (quote it so the shell does not "
                                  "expand it).")
            found += [(p, p.name) for p in files]
        else:
            raise SlimcvError(f"Input {text} does not exist; give image files, folders of images or a glob.")
    return _unique_names(found)


def _unique_names(found: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    """Inputs whose outputs would share a name (``a/x.png`` and ``b/x.png``, or ``x.png`` and ``x.jpg``) get
    ``x`` and ``x_1``: nothing is overwritten."""
    taken: set[str] = set()
    out = []
    for path, name in found:
        stem, suffix = str(Path(name).with_suffix("")), Path(name).suffix
        key, n = stem, 0
        while key.lower() in taken:
            n += 1
            key = f"{stem}_{n}"
        taken.add(key.lower())
        out.append((path, key + suffix))
    return out


@dataclass(frozen=True)
class PredictConfig:
    """How `predict` runs and what it writes (the CLI's flags are made from these fields)."""

    out_dir: str = field(default="predictions", metadata={"help": "folder for masks/, overlays/, predictions.json "
                                                                   "(and .csv)"})
    batch_size: int = field(default=8, metadata={"help": "images per inference call"})
    topk: int = field(default=5, metadata={"help": "classification: scores of the k best classes"})
    overlays: bool = field(default=True, metadata={"help": "segmentation: also write overlays"})
    alpha: float = field(default=0.5, metadata={"help": "opacity of the mask colours in overlays"})
    max_pixels: int | None = field(default=None, metadata={
        "help": "skip larger images before decoding them (default: 50 million, or 64 times the model's input)"})
    score_threshold: float | None = field(default=None, metadata={
        "help": "detection: keep boxes scoring at least this (default: the one the model file records)"})
    runtime: str | None = field(default=None, metadata={"help": "runtime from the table: ort, ort-cuda, openvino, "
                                                        "openvino-f32 (default: the one quantize chose, else ort)"})
    threads: int | None = field(default=None, metadata={"help": "intra-op threads of the runtime (default: the "
                                                        "runtime's)"})


def predict_files(artifact: str | Path | Predictor, inputs: Sequence[str | Path], out_dir: str | Path, *,
                  batch_size: int = 8, topk: int = 5, overlays: bool = True, alpha: float = 0.5,
                  runtime: str | None = None, threads: int | None = None, progress: bool = True,
                  max_pixels: int | None = None, score_threshold: float | None = None) -> PredictResult:
    """Predict every image of ``inputs`` with a deployed model and write the results under ``out_dir``.

    Segmentation: ``masks/NAME.png`` (class indices) and ``overlays/NAME.jpg``; detection: ``predictions.csv``
    (one box per row, in the original image's pixels) and ``overlays/NAME.jpg``; classification:
    ``predictions.csv``. All: ``predictions.json`` (one record per image) and ``predict.json`` (the summary).
    Images that cannot be read are listed as skipped, not fatal.
    """
    if batch_size < 1 or topk < 1:
        raise SlimcvError(f"--batch-size and --topk must be at least 1 (got {batch_size} and {topk}).")
    predictor = artifact if isinstance(artifact, Predictor) else load(artifact, threads=threads, runtime=runtime,
                                                                      max_pixels=max_pixels,
                                                                      score_threshold=score_threshold)
    out = Path(out_dir).resolve()
    # an output folder inside an input folder: its own masks and overlays are no inputs on the next run
    files = [(p, n) for p, n in expand_inputs(inputs) if not _written_by_us(p, out)]
    if not files:
        raise SlimcvError(f"Every input image lies in the output folder {out_dir}; give images outside it.")
    from slimcv._console import progress_bar

    start = time.perf_counter()
    records: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    with atomic_dir(out_dir, owned_by=PREDICT_JSON) as tmp, progress_bar("predicting", len(files), progress) as advance:
        for i in range(0, len(files), batch_size):
            chunk = files[i:i + batch_size]
            images, names = [], []
            for path, name in chunk:
                try:
                    images.append(to_pil(path, predictor.max_pixels))
                    names.append((path, name))
                except SlimcvError as e:
                    skipped.append({"path": str(path), "reason": str(e)})
            preds = predictor.predict_batch(images, batch_size=batch_size) if images else []
            for (path, name), image, pred in zip(names, images, preds):
                records.append(_write_one(tmp, predictor, path, name, image, pred, topk, overlays, alpha))
            if advance:
                advance(len(chunk), {})
        seconds = time.perf_counter() - start
        _write_tables(tmp, predictor.task, records)
        atomic_write_json(Path(tmp) / PREDICT_JSON, {
            "artifact": str(predictor.path), "runtime": predictor.runtime, "task": predictor.task,
            "images": len(records), "skipped": skipped, "seconds": round(seconds, 3),
            "images_per_s": round(len(records) / seconds, 2) if seconds else None, "topk": topk})
    return PredictResult(Path(out_dir), predictor.task, records, skipped, seconds)


def _write_one(root: Path, predictor: Predictor, path: Path, name: str, image: Image.Image, pred: Any, topk: int,
               overlays: bool, alpha: float) -> dict[str, Any]:
    record: dict[str, Any] = {"path": str(path), "name": name}
    if predictor.task == "classification":
        top = pred.topk(topk)
        record.update({"label": pred.label, "class": pred.name, "score": top[0]["score"], "topk": top})
        return record
    if predictor.task == "detection":
        record["boxes"] = pred.boxes()
        if overlays:
            record["overlay"] = _save_overlay(root, name, predictor.overlay(image, pred))
        return record
    mask_rel = f"masks/{Path(name).with_suffix('.png').as_posix()}"
    _save_png(root / mask_rel, pred.mask)
    record["mask"] = mask_rel
    if overlays:
        record["overlay"] = _save_overlay(root, name, predictor.overlay(image, pred.mask, alpha))
    record["classes"] = class_shares(pred.mask, predictor.class_names)
    return record


def _save_overlay(root: Path, name: str, picture: np.ndarray) -> str:
    rel = f"overlays/{Path(name).with_suffix('.jpg').as_posix()}"
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(target, quality=90)
    return rel


def _save_png(path: Path, mask: np.ndarray) -> None:
    """A class-index mask as an 8-bit greyscale PNG: every reader gets the indices back exactly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8), mode="L").save(path, format="PNG")


def _write_tables(root: Path, task: str, records: list[dict[str, Any]]) -> None:
    (Path(root) / "predictions.json").write_text(json.dumps(records, indent=1) + "\n")
    if task == "detection":
        with open(Path(root) / "predictions.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "name", "score", "x1", "y1", "x2", "y2"])
            for r in records:
                for b in r["boxes"]:
                    w.writerow([r["path"], b["label"], b["name"], f"{b['score']:.5f}", *b["box"]])
        return
    if task != "classification":
        return
    with open(Path(root) / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "class", "score", "topk"])
        for r in records:
            w.writerow([r["path"], r["label"], r["class"], f"{r['score']:.6f}",
                        " ".join(f"{t['name'] if t['name'] is not None else t['label']}:{t['score']:.4f}"
                                 for t in r["topk"])])
