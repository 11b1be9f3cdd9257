"""A small predictor over an exported ONNX file and its JSON sidecar: numpy, Pillow and ONNX Runtime only."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from slimcv.errors import SlimcvError


@dataclass
class Prediction:
    """Classification: ``label``/``name``/``probs``; segmentation: ``mask`` (H, W) at the input image's size."""

    label: int | None = None
    name: str | None = None
    probs: np.ndarray | None = None
    mask: np.ndarray | None = None


class Predictor:
    """Preprocess like validation, run the ONNX file, postprocess: ``Predictor(path)(image)``."""

    def __init__(self, path: str | Path, threads: int | None = None, providers: list[str] | None = None,
                 runtime: str | None = None) -> None:
        from slimcv.deploy import runtimes

        self.path = Path(path)
        self.meta = read_sidecar(self.path)
        self.runtime = runtimes.get(runtime or ("ort-cuda" if providers and "CUDAExecutionProvider" in providers
                                                else "ort")).name
        if runtimes.get(self.runtime).runs != "onnx":
            raise SlimcvError(f"Runtime {self.runtime!r} runs PyTorch modules; a deployed file runs in ort, ort-cuda "
                              "or openvino.")
        self.run = runtimes.open_session(self.path, self.runtime, threads)
        self.task = self.meta["task"]
        self.class_names = self.meta.get("class_names")

    def preprocess(self, image: Any) -> np.ndarray:
        """An image path, PIL image or HxWx3 uint8 array -> normalised (1, 3, H, W) float32."""
        im = to_pil(image)
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
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None])

    def logits(self, image: Any) -> np.ndarray:
        """Raw model output for one image."""
        return self.run(self.preprocess(image))

    def __call__(self, image: Any) -> Prediction:
        """Predict one image."""
        size = to_pil(image).size
        out = self.logits(image)[0]
        if self.task == "classification":
            e = np.exp(out - out.max())
            probs = e / e.sum()
            label = int(probs.argmax())
            return Prediction(label=label, name=self.class_names[label] if self.class_names else None, probs=probs)
        if out.shape[-2:] != (size[1], size[0]):  # bilinear on logits, as evaluation does
            out = np.stack([np.asarray(Image.fromarray(c.astype(np.float32)).resize(size, Image.BILINEAR))
                            for c in out])
        return Prediction(mask=out.argmax(0).astype(np.uint8))


def load(path: str | Path, threads: int | None = None, runtime: str | None = None) -> Predictor:
    """A :class:`Predictor` over an ONNX file (its ``.onnx.json`` sidecar holds the preprocessing), or over the
    model a ``quantize`` folder recommends, in the runtime it was chosen for; ``runtime`` forces one."""
    path = Path(path)
    if path.is_dir() and (path / "quantize.json").is_file():
        path, chosen = _recommended(path)
        runtime = runtime or chosen
    return Predictor(path, threads, runtime=runtime)


def _recommended(folder: Path) -> tuple[Path, str]:
    """The file and runtime ``quantize.json`` recommends (PyTorch itself: its FP32 ONNX file in ONNX Runtime)."""
    from slimcv.deploy import runtimes

    try:
        info = json.loads((folder / "quantize.json").read_text())
        name = info["recommendation"]["name"]
        model = next(m for m in info["models"] if m["name"] == name)
    except (ValueError, KeyError, StopIteration) as e:
        raise SlimcvError(f"{folder / 'quantize.json'} names no recommended model ({e}); run `slimcv quantize` "
                          "again.") from e
    rt = runtimes.get(model["runtime"])
    if rt.runs != "onnx":
        return folder / "model_fp32.onnx", "ort"
    if not rt.available:  # chosen on another machine: run the same file where it can run here
        return folder / model["path"], "ort"
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
    """The JSON written beside an exported ONNX file."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise SlimcvError(f"ONNX file {onnx_path} does not exist; export one with `slimcv export`.")
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


def to_pil(image: Any) -> Image.Image:
    """An image path, PIL image, HxWx3 uint8 array or HxWx3 float array in [0, 1] as an RGB PIL image."""
    if isinstance(image, Image.Image):
        im = image.convert("RGB")
    elif isinstance(image, (str, Path)):
        if not Path(image).is_file():
            raise SlimcvError(f"Image file {image} does not exist; check the path.")
        try:
            with Image.open(image) as opened:
                im = opened.convert("RGB")
        except (OSError, ValueError) as e:
            raise SlimcvError(f"Cannot read image {image} ({e}); the file is corrupt or not an image.") from e
    else:
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise SlimcvError(f"Expected an HxWx3 RGB image, got an array of shape {arr.shape}.")
        if arr.dtype == np.uint8:
            pass
        elif np.issubdtype(arr.dtype, np.floating):
            if arr.size and (not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1):
                raise SlimcvError(f"A float image must hold values in [0, 1] (got {float(np.nanmin(arr)):.3g} to "
                                  f"{float(np.nanmax(arr)):.3g}); divide by 255 or pass uint8.")
            arr = (arr * 255).round().astype(np.uint8)
        else:
            raise SlimcvError(f"Images are uint8 (0-255) or float in [0, 1], not {arr.dtype}; convert it first.")
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            raise SlimcvError(f"The image is empty ({arr.shape[0]}x{arr.shape[1]}); give an image with pixels.")
        im = Image.fromarray(arr)
    if im.width == 0 or im.height == 0:
        raise SlimcvError("The image is empty (0 pixels); give an image with pixels.")
    return im
