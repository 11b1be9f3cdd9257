"""Run each report entry's model on the validation set: confusion matrices it lacks, and segmentation overlays
(image | ground truth | each model, in the dataset's colours, with a per-model error map) on fixed images."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimcv.config import DataConfig
from slimcv.data import DataBundle, build_dataset, load_data
from slimcv.deploy.visual import colorize, void_color
from slimcv.engine.loop import match_size
from slimcv.engine.metrics import ConfusionMatrix
from slimcv.engine.train import make_eval_loader
from slimcv.errors import SlimcvError
from slimcv.report.collect import Entry
from slimcv.report.plots import plt, to_png

ERROR_RGB = (255, 32, 32)  # wrong pixels in an error map; correct ones show the dimmed image, void is black


@dataclass
class Predictions:
    """One model's class maps on the overlay images (at the masks' resolution) and, when asked, its confusion."""

    masks: dict[int, np.ndarray] = field(default_factory=dict)
    confusion: np.ndarray | None = None
    boxes: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  # detection: boxes in the input's pixels


def fixed_indices(n_val: int, k: int) -> list[int]:
    """``k`` validation indices spread evenly over the split: the same images for every model and every report."""
    if n_val <= 0 or k <= 0:
        return []
    return sorted({int(round(i)) for i in np.linspace(0, n_val - 1, min(k, n_val))})


def load_bundle(data: dict[str, Any] | None) -> DataBundle | None:
    """The data a run was evaluated on, or None when its config is missing or the files are not here."""
    if not data:
        return None
    try:
        return load_data(DataConfig(**{**data, "workers": 0}))
    except (SlimcvError, TypeError, ValueError):
        return None


def predict(entry: Entry, bundle: DataBundle, indices: Sequence[int], confusion: bool,
            threads: int | None = None) -> Predictions:
    """Class maps on ``indices`` and (if ``confusion``) the confusion matrix over the whole validation split."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _predict(_forward(entry, threads), bundle, indices, confusion)
    finally:
        torch.set_num_threads(previous)


def _predict(forward, bundle: DataBundle, indices: Sequence[int], confusion: bool) -> Predictions:
    out = Predictions()
    val = bundle.val
    for i in indices:
        image, target = val[i]
        out.masks[i] = _argmax(forward(image[None]), torch.as_tensor(target)[None])[0].numpy()
    if confusion:
        cm = ConfusionMatrix(bundle.num_classes, bundle.info.ignore_index if bundle.task == "segmentation" else None)
        loader = make_eval_loader(val, bundle.config.eval_batch_size or bundle.config.batch_size, 0,
                                  bundle.info.ignore_index)
        for images, targets in loader:
            cm.update(targets, _argmax(forward(images), targets))
        out.confusion = cm.mat.numpy()
    return out


def _argmax(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return match_size(logits.float(), targets).argmax(1)


def _forward(entry: Entry, threads: int | None) -> Callable[[torch.Tensor], torch.Tensor]:
    path = entry.model_path
    if path is None:
        raise SlimcvError(f"{entry.name} has no loadable model.")
    if Path(path).suffix in (".onnx", ".xml"):  # an ONNX file, or an OpenVINO IR from NNCF
        from slimcv.deploy import runtimes

        session = runtimes.open_session(path, runtimes.default_for(path), threads)

        def run_onnx(x: torch.Tensor) -> torch.Tensor:
            # one sample per call: an exported file may have a fixed batch size of 1
            outs = [session(np.ascontiguousarray(s[None].numpy(), dtype=np.float32)) for s in x]
            return torch.from_numpy(np.concatenate(outs))

        return run_onnx
    from slimcv.artifact import load_run_model

    model, _ = load_run_model(path)
    model.eval()

    def run_torch(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return run_torch


def raw_samples(bundle: DataBundle, indices: Sequence[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Untransformed (image HxWx3 uint8, mask HxW) pairs for ``indices`` of the validation split."""
    cfg = bundle.config
    ds = build_dataset(cfg.spec, cfg.val_split, **cfg.options)
    out = {}
    for i in indices:
        image, mask = ds.load(i)
        out[i] = (image.permute(1, 2, 0).numpy(), np.asarray(mask))
    return out


ERROR_NAMES = {ERROR_RGB: "red", (255, 0, 255): "magenta", (0, 255, 255): "cyan", (255, 255, 0): "yellow",
               (255, 128, 0): "orange"}
ERROR_CANDIDATES = tuple(ERROR_NAMES)


def error_color(palette: Sequence[Sequence[int]] | None) -> tuple[int, int, int]:
    """The colour of wrong pixels: red, unless a class colour is close to it; then the candidate farthest from
    every class colour, so an error never reads as a class."""
    if not palette:
        return ERROR_RGB
    colors = np.asarray(palette, float)

    def distance(c) -> float:
        return float(np.abs(colors - np.asarray(c, float)).sum(1).min())

    return ERROR_RGB if distance(ERROR_RGB) >= 120 else max(ERROR_CANDIDATES, key=distance)


def error_map(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, ignore_index: int,
              void: Sequence[int] = (0, 0, 0), wrong: Sequence[int] = ERROR_RGB) -> np.ndarray:
    """Correct pixels as the dimmed grey image, wrong pixels in ``wrong``, void pixels in ``void``."""
    grey = (image.mean(2, keepdims=True) * 0.45 + 40).astype(np.uint8).repeat(3, 2)
    out = grey.copy()
    out[(pred != truth)] = wrong
    out[truth == ignore_index] = void
    return out


def nearest_resize(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A label map at ``shape`` by nearest neighbour (unchanged when it already has that shape)."""
    if mask.shape == tuple(shape):
        return mask
    rows = (np.arange(shape[0]) * mask.shape[0] // shape[0]).clip(0, mask.shape[0] - 1)
    cols = (np.arange(shape[1]) * mask.shape[1] // shape[1]).clip(0, mask.shape[1] - 1)
    return mask[rows][:, cols]


def overlay_figure(image: np.ndarray, truth: np.ndarray, preds: dict[str, np.ndarray], class_names: Sequence[str],
                   palette: Sequence[Sequence[int]], ignore_index: int, title: str, per_row: int = 3) -> bytes:
    """image | ground truth | ``per_row`` predictions, each with its error map below it, the legend under image and
    truth; more models continue on full-width row pairs below."""
    names = list(preds)
    cols = 2 + min(per_row, max(1, len(names)))
    slots = [(0, c) for c in range(2, cols)]  # beside image and truth first, then full rows below
    while len(slots) < len(names):
        slots += [(slots[-1][0] + 2, c) for c in range(cols)]
    blocks = slots[len(names) - 1][0] // 2 + 1 if names else 1
    h, w = truth.shape
    cell_w, cell_h = 2.4, 2.4 * h / w
    height = blocks * 2 * (cell_h + 0.45) + 0.8
    fig, axes = plt.subplots(2 * blocks, cols, figsize=(cell_w * cols, height), squeeze=False,
                             gridspec_kw={"wspace": 0.04, "hspace": 0.3, "left": 0.01, "right": 0.99,
                                          "bottom": 0.01, "top": 1 - 0.8 / height})
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_visible(False)
    void = void_color(palette)
    _show(axes[0][0], image, "image")
    _show(axes[0][1], colorize(truth, palette, ignore_index), "ground truth")
    valid = truth != ignore_index
    for (row, col), name in zip(slots, names):
        p = nearest_resize(preds[name], truth.shape)  # a model scored at another size is shown at the truth's
        wrong = float(((p != truth) & valid).sum()) / max(1, int(valid.sum()))
        _show(axes[row][col], colorize(p, palette, ignore_index), _wrap(name))
        _show(axes[row + 1][col], error_map(image, truth, p, ignore_index, void, error_color(palette)),
              f"errors: {100 * wrong:.1f}% of pixels wrong")
    handles = [matplotlib_patch(np.array(rgb) / 255, name) for name, rgb in zip(class_names, palette)]
    handles += [matplotlib_patch(np.array(error_color(palette)) / 255, "wrong (error maps)"),
                matplotlib_patch(np.array(void) / 255, "void / ignored")]
    a, b = axes[1][0].get_position(), axes[1][1].get_position()  # the two free cells under image and truth
    legend_ax = fig.add_axes((a.x0, a.y0, b.x1 - a.x0, a.height), frameon=False)
    legend_ax.axis("off")
    legend_ax.legend(handles=handles, loc="center", fontsize=8, ncol=2, frameon=False,
                     title="classes (dataset palette)", title_fontsize=8.5)
    fig.suptitle(title, fontsize=10, y=1 - 0.2 / height)
    return to_png(fig)


def _show(ax, rgb: np.ndarray, label: str) -> None:
    ax.set_visible(True)
    ax.imshow(rgb, interpolation="nearest")
    ax.set_title(label, fontsize=8.5)


def _wrap(name: str, width: int = 30) -> str:
    """Break a long run name after a ':' or '_' so it fits above a panel."""
    lines, rest = [], name
    while len(rest) > width:
        cut = max(rest.rfind(":", 0, width), rest.rfind("_", 0, width))
        cut = cut + 1 if cut > 0 else width
        lines.append(rest[:cut])
        rest = rest[cut:]
    return "\n".join([*lines, rest])


def matplotlib_patch(color, label: str):
    from matplotlib.patches import Patch

    return Patch(facecolor=color, edgecolor="black", linewidth=0.4, label=label)


# ---------------------------------------------------------------- detection: predicted and true boxes

SHOWN_SCORE = 0.3  # boxes drawn in a detection overlay score at least this


def predict_boxes(entry: Entry, bundle: DataBundle, indices: Sequence[int], threads: int | None = None
                  ) -> Predictions:
    """A detector's boxes on the validation images ``indices`` (as the model, or its file as deployed, gives them)."""
    from slimcv.engine.detection import predictions

    path = entry.model_path
    if path is None:
        raise SlimcvError(f"{entry.name} has no loadable model.")
    if Path(path).suffix in (".onnx", ".xml"):
        from slimcv.deploy import runtimes
        from slimcv.deploy.deployed import DeployedModule

        model = DeployedModule(path, runtimes.default_for(path), threads)
    else:
        from slimcv.artifact import load_run_model

        model, _ = load_run_model(path)
    model.eval()
    out = Predictions()
    with torch.inference_mode():
        for i in indices:
            out.boxes[i] = predictions(model, bundle.val[i][0][None])[0]
    return out


def boxes_figure(image: np.ndarray, truth: dict[str, np.ndarray], preds: dict[str, dict[str, np.ndarray]],
                 input_hw: Sequence[int], class_names: Sequence[str], title: str) -> bytes:
    """image with its true boxes | each model's boxes scoring at least ``SHOWN_SCORE`` (drawn on the original)."""
    from slimcv.deploy.visual import default_palette, draw_boxes

    palette = default_palette(len(class_names) + 1)[1:]
    up = max(1, -(-256 // min(image.shape[:2])))  # small images drawn larger, so the labels stay readable
    image = image.repeat(up, 0).repeat(up, 1)
    truth = {"boxes": np.asarray(truth["boxes"], np.float32) * up, "labels": truth["labels"]}
    h, w = image.shape[:2]
    scale = np.asarray([w / input_hw[1], h / input_hw[0]] * 2, np.float32)
    panels = [("ground truth", draw_boxes(image, truth["boxes"], truth["labels"], None, class_names, palette))]
    for name, p in preds.items():
        keep = p["scores"] >= SHOWN_SCORE
        panels.append((_wrap(name), draw_boxes(image, p["boxes"][keep] * scale, p["labels"][keep],
                                               p["scores"][keep], class_names, palette)))
    cell = 3.0
    fig, axes = plt.subplots(1, len(panels), figsize=(cell * len(panels), cell * h / w + 0.7), squeeze=False)
    for ax, (label, rgb) in zip(axes[0], panels):
        ax.set_xticks([])
        ax.set_yticks([])
        _show(ax, rgb, label)
    fig.suptitle(f"{title} (boxes scoring {SHOWN_SCORE} or more)", fontsize=10)
    return to_png(fig)


def raw_detection_samples(bundle: DataBundle, indices: Sequence[int]) -> dict[int, tuple[np.ndarray, dict]]:
    """Untransformed (image HxWx3 uint8, {"boxes", "labels"} in its pixels) for ``indices`` of the validation split."""
    cfg = bundle.config
    ds = build_dataset(cfg.spec, cfg.val_split, **cfg.options)
    out = {}
    for i in indices:
        image, target = ds.load(i)
        out[i] = (image.permute(1, 2, 0).numpy(), {"boxes": np.asarray(target["boxes"], np.float32),
                                                   "labels": np.asarray(target["labels"], np.int64)})
    return out
