"""A small predictor over an exported ONNX file and its JSON sidecar: numpy, Pillow and ONNX Runtime only."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from slimcv.deploy.boxes import PREDICT_THRESHOLD, BoxSelection, Detections, select, to_records
from slimcv.deploy.images import pixel_limit, to_pil  # noqa: F401  (to_pil: also imported from here)
from slimcv.deploy.visual import colorize, default_palette, draw_boxes, overlay
from slimcv.errors import SlimcvError
from slimcv import run_folder
from slimcv.run_folder import QUANTIZE_JSON



@dataclass
class Prediction:
    """Classification: ``label``/``name``/``probs``; segmentation: ``mask`` (H, W) at the input image's size, and
    ``probs`` (C, H, W) when asked for; detection: ``detections`` (boxes in the input image's pixels)."""

    label: int | None = None
    name: str | None = None
    probs: np.ndarray | None = None
    mask: np.ndarray | None = None
    class_names: Sequence[str] | None = field(default=None, repr=False)
    detections: Detections | None = None

    def boxes(self) -> list[dict[str, Any]]:
        """A detection's boxes, best first: ``{"label", "name", "score", "box": [x1, y1, x2, y2]}``."""
        if self.detections is None:
            raise SlimcvError("boxes are for detection predictions; this model classifies or segments.")
        return to_records(self.detections, self.class_names)

    def topk(self, k: int = 5) -> list[dict[str, Any]]:
        """The ``k`` most likely classes of a classification, best first: ``{"label", "name", "score"}``."""
        if self.mask is not None or self.probs is None:
            raise SlimcvError("top-k scores are for classification predictions; a segmentation has a mask.")
        order = np.argsort(-self.probs, kind="stable")[:max(1, k)]
        return [{"label": int(i), "name": self.class_names[i] if self.class_names else None,
                 "score": float(self.probs[i])} for i in order]


class Predictor:
    """Preprocess like validation, run the ONNX file, postprocess: ``Predictor(path)(image)``."""

    def __init__(self, path: str | Path, threads: int | None = None, providers: list[str] | None = None,
                 runtime: str | None = None, max_pixels: int | None = None,
                 score_threshold: float | None = None) -> None:
        from slimcv.deploy import runtimes

        self.path = Path(path)
        self.meta = read_sidecar(self.path)
        self.runtime = runtimes.get(runtime or (runtimes.ORT_CUDA if providers and "CUDAExecutionProvider" in providers
                                                else runtimes.default_for(self.path))).name
        if runtimes.get(self.runtime).runs != "onnx":
            raise SlimcvError(f"Runtime {self.runtime!r} runs PyTorch modules; a deployed file runs in ort, ort-cuda "
                              "or openvino.")
        self.run = runtimes.finite_outputs(runtimes.open_session(self.path, self.runtime, threads), self.path)
        self.task = self.meta["task"]
        self.class_names = self.meta.get("class_names")
        self.ignore_index = int(self.meta.get("ignore_index", 255))
        size = self.meta.get("center_crop") or self.meta.get("resize")
        hw = (size, size) if isinstance(size, int) else tuple(size) if size else self.meta.get("input_size")
        self.max_pixels = pixel_limit(tuple(hw) if hw else None, max_pixels)  # checked before decoding
        batch = self.meta.get("batch", "dynamic")
        self.fixed_batch = int(batch) if isinstance(batch, int) or str(batch).isdigit() else None
        self._palette = self.meta.get("palette")
        if self.task == "detection":
            self.selection = BoxSelection.from_json(self.meta.get("selection", {}))
            self.score_threshold = float(self.meta.get("score_threshold", PREDICT_THRESHOLD) if score_threshold is None
                                         else score_threshold)
            if not 0.0 <= self.score_threshold < 1.0:
                raise SlimcvError(f"Score threshold {self.score_threshold} is outside [0, 1); give e.g. 0.3.")

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        """Class colours: the dataset's own, else distinct defaults, one per class."""
        if not self._palette:
            n = len(self.class_names) if self.class_names else self._num_outputs()
            # a detector's classes are all objects: no black background colour
            self._palette = default_palette(n + 1)[1:] if self.task == "detection" else default_palette(n)
        return [tuple(int(v) for v in c) for c in self._palette]

    def _num_outputs(self) -> int:
        size = self.meta.get("center_crop") or self.meta.get("resize")
        h, w = size if isinstance(size, list) else self.meta.get("input_size") or (64, 64)
        out = self.run(np.zeros((self.fixed_batch or 1, 3, h, w), np.float32))
        return int(out.shape[-1] - 4) if self.task == "detection" else int(out.shape[1])

    def colorize(self, mask: Any) -> np.ndarray:
        """A predicted mask in this model's class colours (H, W, 3 uint8)."""
        return colorize(_mask_of(mask), self.palette, self.ignore_index)

    def overlay(self, image: Any, mask: Any, alpha: float = 0.5) -> np.ndarray:
        """``image`` with the predicted mask's colours blended in, or a detection's labelled boxes (H, W, 3 uint8)."""
        if isinstance(mask, Prediction) and mask.detections is not None:
            d = mask.detections
            return draw_boxes(image, d.boxes, d.labels, d.scores, self.class_names, self.palette)
        return overlay(image, _mask_of(mask), self.palette, alpha, self.ignore_index)

    def preprocess(self, image: Any) -> np.ndarray:
        """An image path, PIL image or HxWx3 uint8 array -> normalised (1, 3, H, W) float32."""
        return self.prepare(to_pil(image, self.max_pixels))[None]

    def prepare(self, im: Image.Image) -> np.ndarray:
        """An RGB PIL image -> the normalised (3, H, W) float32 array the model takes."""
        resize, crop = self.meta.get("resize"), self.meta.get("center_crop")
        if isinstance(resize, int):  # shorter side
            s = resize / min(im.size)
            im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BILINEAR)
        elif resize:
            im = im.resize((resize[1], resize[0]), Image.BILINEAR)
        if crop:
            left, top = (im.width - crop[1]) // 2, (im.height - crop[0]) // 2
            im = im.crop((left, top, left + crop[1], top + crop[0]))
        x = np.asarray(im, dtype=np.float32) / 255.0
        x = (x - np.asarray(self.meta["mean"], np.float32)) / np.asarray(self.meta["std"], np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def logits(self, image: Any) -> np.ndarray:
        """Raw model output for one image."""
        return self.run(self.preprocess(image))

    def __call__(self, image: Any, probs: bool = False) -> Prediction:
        """Predict one image; ``probs=True`` also returns a segmentation's per-pixel class probabilities."""
        return self.predict_batch([image], probs=probs)[0]

    def predict_batch(self, images: Sequence[Any], probs: bool = False, batch_size: int = 8) -> list[Prediction]:
        """Predict several images, running those of one preprocessed size together in batches of ``batch_size``."""
        pils = [to_pil(im, self.max_pixels) for im in images]
        return self.predict_prepared([(self.prepare(im), im.size) for im in pils], probs, batch_size)

    def predict_prepared(self, items: Sequence[tuple[np.ndarray, tuple[int, int]]], probs: bool = False,
                         batch_size: int = 8) -> list[Prediction]:
        """Predict already preprocessed (3, H, W) arrays, each with its original (width, height)."""
        out: list[Prediction | None] = [None] * len(items)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (x, _) in enumerate(items):
            groups.setdefault(x.shape, []).append(i)
        step = self.fixed_batch or max(1, batch_size)
        for idx in groups.values():
            for start in range(0, len(idx), step):
                chunk = idx[start:start + step]
                x = np.stack([items[i][0] for i in chunk])
                if self.fixed_batch and len(chunk) < self.fixed_batch:  # a file exported for a fixed batch size
                    x = np.concatenate([x, np.repeat(x[-1:], self.fixed_batch - len(chunk), 0)])
                logits = self.run(x)
                for j, i in enumerate(chunk):
                    out[i] = self.postprocess(logits[j], items[i][1], probs)
        return out  # type: ignore[return-value]

    def postprocess(self, out: np.ndarray, size: tuple[int, int], probs: bool = False) -> Prediction:
        """One image's logits -> a :class:`Prediction` (segmentation: logits resized to ``size`` = (W, H))."""
        if self.task == "detection":
            h, w = self.meta["resize"]
            det = select(out, self.selection.with_threshold(max(self.score_threshold, self.selection.score_threshold)))
            return Prediction(detections=det.scaled(size[0] / w, size[1] / h), class_names=self.class_names)
        if self.task == "classification":
            p = _softmax(out.astype(np.float32), 0)
            label = int(p.argmax())
            return Prediction(label=label, name=self.class_names[label] if self.class_names else None, probs=p,
                              class_names=self.class_names)
        mask, p = upsample_argmax(out.astype(np.float32), size[1], size[0], probs)
        return Prediction(mask=mask, probs=p, class_names=self.class_names)


BAND_FLOATS = 1 << 24  # floats one band of upsampled logits may hold (64 MiB): memory stays bounded


def upsample_argmax(logits: np.ndarray, height: int, width: int, probs: bool = False
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """The (H, W) class mask of (C, h, w) logits resized bilinearly to ``height`` x ``width`` (half-pixel centres,
    as evaluation's ``F.interpolate(align_corners=False)``), computed a band of rows at a time so a huge image
    never holds C full-size maps; ``probs`` also returns the (C, H, W) probabilities."""
    c, h, w = logits.shape
    ys, y1, wy = _axis(h, height)
    xs, x1, wx = _axis(w, width)
    mask = np.empty((height, width), np.uint8 if c <= 256 else np.int64)
    p = np.empty((c, height, width), np.float32) if probs else None
    rows = max(1, BAND_FLOATS // max(1, c * width))
    for r0 in range(0, height, rows):
        r = slice(r0, min(height, r0 + rows))
        band = logits[:, ys[r], :] * (1 - wy[r])[None, :, None] + logits[:, y1[r], :] * wy[r][None, :, None]
        band = band[:, :, xs] * (1 - wx) + band[:, :, x1] * wx
        mask[r] = band.argmax(0)
        if p is not None:
            p[:, r] = _softmax(band, 0)
    return mask, p


def _axis(n: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices below and above each output coordinate, and the weight of the one above."""
    pos = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
    lo = np.floor(pos).astype(np.int64)
    return lo, np.minimum(lo + 1, n - 1), (pos - lo).astype(np.float32)


def class_shares(mask: np.ndarray, class_names: Sequence[str] | None = None) -> dict[str, float]:
    """Share of the mask's pixels per class present, by class name (index where unnamed)."""
    counts = np.bincount(np.asarray(mask).ravel())
    names = list(class_names or [])
    return {(names[c] if c < len(names) else str(c)): round(int(n) / max(1, counts.sum()), 4)
            for c, n in enumerate(counts) if n}


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _mask_of(mask: Any) -> np.ndarray:
    return mask.mask if isinstance(mask, Prediction) else np.asarray(mask)


def load(path: str | Path, threads: int | None = None, runtime: str | None = None,
         max_pixels: int | None = None, score_threshold: float | None = None) -> Predictor:
    """A :class:`Predictor` over an ONNX file (its ``.onnx.json`` sidecar holds the preprocessing), or over the
    model a ``quantize`` folder recommends, in the runtime it was chosen for; ``runtime`` forces one.
    ``max_pixels``: larger images are refused before they are decoded (default: see ``images.pixel_limit``)."""
    path = Path(path)
    if run_folder.kind(path) == "quantize":
        path, chosen = _recommended(path)
        runtime = runtime or chosen
    return Predictor(path, threads, runtime=runtime, max_pixels=max_pixels, score_threshold=score_threshold)


def _recommended(folder: Path) -> tuple[Path, str]:
    """The file and runtime ``quantize.json`` recommends (PyTorch itself: its FP32 ONNX file in ONNX Runtime)."""
    from slimcv.deploy import runtimes

    try:
        info = json.loads((folder / QUANTIZE_JSON).read_text())
        name = info["recommendation"]["name"]
        model = next(m for m in info["models"] if m["name"] == name)
    except (ValueError, KeyError, StopIteration) as e:
        raise SlimcvError(f"{folder / QUANTIZE_JSON} names no recommended model ({e}); run `slimcv quantize` "
                          "again.") from e
    rt = runtimes.get(model["runtime"])
    if rt.runs != "onnx":
        return folder / "model_fp32.onnx", runtimes.ORT
    if not rt.available:  # chosen on another machine: run the same file where it can run here, else the FP32 one
        return (folder / model["path"], runtimes.ORT) if runtimes.reads(runtimes.ORT, model["path"]) else \
            (folder / "model_fp32.onnx", runtimes.ORT)
    return folder / model["path"], rt.name


def sidecar_path(onnx_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json``: its own name, so it never replaces a model folder's model.json."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + ".json")


def find_sidecar(onnx_path: str | Path) -> Path | None:
    """The sidecar of an ONNX file (``model.onnx.json``, or ``model.json`` from older slimcv), None if absent."""
    onnx_path = Path(onnx_path)
    side = sidecar_path(onnx_path)
    if side.is_file():
        return side
    legacy = onnx_path.with_suffix(".json")
    if legacy.is_file():
        try:
            meta = json.loads(legacy.read_text())
        except (ValueError, UnicodeDecodeError):
            return None
        if isinstance(meta, dict) and "mean" in meta and "task" in meta:
            return legacy
    return None


def read_sidecar(onnx_path: str | Path) -> dict[str, Any]:
    """The JSON written beside an exported ONNX file (or an OpenVINO IR .xml file that slimcv quantize wrote)."""
    onnx_path = Path(onnx_path)
    if onnx_path.is_dir():
        raise SlimcvError(f"{onnx_path} is a folder, not a deployed model file; export it first (slimcv export "
                          f"{onnx_path} -o {onnx_path / 'deploy' / 'model.onnx'}) and predict with that file.")
    if not onnx_path.is_file():
        raise SlimcvError(f"Model file {onnx_path} does not exist; export one with `slimcv export`.")
    side = find_sidecar(onnx_path)
    if side is None:
        raise SlimcvError(f"{sidecar_path(onnx_path)} is missing: it holds the preprocessing; re-export with "
                          "`slimcv export` or `slimcv quantize`, which write it beside the .onnx file.")
    try:
        meta = json.loads(side.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise SlimcvError(f"Sidecar {side} is damaged ({e}); re-export the model with slimcv.") from e
    for key in ("task", "mean", "std"):
        if key not in meta:
            raise SlimcvError(f"Sidecar {side} lacks {key!r}; re-export the model with slimcv.")
    return meta


