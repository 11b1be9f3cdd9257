"""Masks as pictures: class colours, colour masks and overlays on the input image (numpy and Pillow only)."""
from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from slimcv.deploy.images import to_pil

# Distinct colours for models whose data carries no palette; none is close to the red of the report's error maps.
BASE_COLORS = ((0, 0, 0), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180), (70, 240, 240),
               (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40),
               (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128),
               (128, 128, 128), (255, 255, 255))

Palette = Sequence[Sequence[int]]


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """``num_classes`` distinguishable colours (class 0 black, as background usually is)."""
    colors = list(BASE_COLORS[:num_classes])
    golden = 0.618033988749895
    for i in range(len(colors), num_classes):  # more classes than the table: spread hues by the golden ratio
        r, g, b = colorsys.hsv_to_rgb((0.13 + i * golden) % 1.0, 0.65 + 0.35 * (i % 2), 0.95 - 0.3 * (i % 3) / 2)
        colors.append((round(255 * r), round(255 * g), round(255 * b)))
    return colors


def void_color(palette: Palette) -> tuple[int, int, int]:
    """Colour of ignored pixels: black, unless a class already is black (then white, then magenta)."""
    used = {tuple(int(v) for v in c) for c in palette}
    return next(c for c in ((0, 0, 0), (255, 255, 255), (255, 0, 255), (0, 255, 255)) if c not in used)


def colorize(mask: Any, palette: Palette | None = None, ignore_index: int = 255) -> np.ndarray:
    """An (H, W) class-index mask as an (H, W, 3) uint8 colour image; unknown and ignored pixels in the void colour."""
    m = np.asarray(mask).astype(np.int64)
    if m.ndim != 2:
        raise ValueError(f"A mask is (H, W) class indices, got shape {m.shape}.")
    if palette is None:
        palette = default_palette(int(m[m != ignore_index].max(initial=0)) + 1)
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(palette)] = np.asarray(palette, np.uint8)[:256]
    rgb = lut[np.clip(m, 0, 255)]
    rgb[(m == ignore_index) | (m >= len(palette)) | (m < 0)] = void_color(palette)
    return rgb


def overlay(image: Any, mask: Any, palette: Palette | None = None, alpha: float = 0.5,
            ignore_index: int = 255) -> np.ndarray:
    """The image with its mask's colours blended in at ``alpha`` (H, W, 3 uint8); the mask is resized to the image."""
    base = to_pil(image)
    m = np.asarray(mask)
    if m.shape[:2] != (base.height, base.width):
        m = np.asarray(Image.fromarray(m.astype(np.uint8)).resize(base.size, Image.NEAREST))
    color = colorize(m, palette, ignore_index).astype(np.float32)
    img = np.asarray(base, np.float32)
    blended = (1 - alpha) * img + alpha * color
    blended[m == ignore_index] = img[m == ignore_index]
    return blended.round().clip(0, 255).astype(np.uint8)


def draw_boxes(image: Any, boxes: Any, labels: Sequence[int], scores: Sequence[float] | None = None,
               class_names: Sequence[str] | None = None, palette: Palette | None = None,
               width: int | None = None) -> np.ndarray:
    """``image`` with labelled boxes (x1, y1, x2, y2 in its pixels) drawn on it (H, W, 3 uint8)."""
    from PIL import ImageDraw

    im = to_pil(image).copy()
    draw = ImageDraw.Draw(im)
    names = list(class_names or [])
    colours = list(palette or default_palette(max(len(names), int(max(labels, default=0)) + 1) + 1)[1:])
    line = width or max(1, round(min(im.size) / 160))
    for i, (box, label) in enumerate(zip(np.asarray(boxes, np.float32).reshape(-1, 4), labels)):
        colour = tuple(int(v) for v in colours[int(label) % len(colours)])
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=line)
        text = names[int(label)] if int(label) < len(names) else str(int(label))
        if scores is not None:
            text += f" {float(scores[i]):.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text)
        top_y = y1 - (bottom - top) - 2 if y1 - (bottom - top) - 2 >= 0 else y1
        draw.rectangle([x1, top_y, x1 + (right - left) + 4, top_y + (bottom - top) + 2], fill=colour)
        draw.text((x1 + 2, top_y), text, fill=(0, 0, 0) if sum(colour) > 380 else (255, 255, 255))
    return np.asarray(im)
