"""Images as users hand them over (a path, bytes, a PIL image, a uint8 or float array) made into RGB PIL images:
a pixel limit checked before any pixel is decoded, and 16-bit or float images converted by their real value range."""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from slimcv.errors import SlimcvError

# Pixels an image may have before slimcv decodes it (about 7000x7000); a predictor raises it for models that
# take larger inputs (see pixel_limit). Decoded RGB at the limit is about 150 MiB.
DEFAULT_MAX_PIXELS = 50_000_000


def pixel_limit(model_hw: tuple[int, int] | None, max_pixels: int | None = None) -> int:
    """The largest image (in pixels) to decode for a model that takes ``model_hw`` images: ``max_pixels`` when
    given, else the default or 64 times the model's input, whichever is larger."""
    if max_pixels is not None:
        if max_pixels < 1:
            raise SlimcvError(f"max_pixels must be positive, got {max_pixels}.")
        return int(max_pixels)
    own = 64 * model_hw[0] * model_hw[1] if model_hw else 0
    return max(DEFAULT_MAX_PIXELS, own)


def open_image(source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None
               ) -> Image.Image:
    """Decode an image file or its bytes as RGB, refusing one over ``max_pixels`` from its header alone."""
    label = name or (str(source) if isinstance(source, (str, Path)) else "The upload")
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise SlimcvError(f"Image file {source} does not exist; check the path.")
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit, checked next
            with Image.open(fp) as im:  # reads the header only: the size is known before any pixel is decoded
                check_pixels(im.size, max_pixels, label)
                return to_rgb(im, label)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise SlimcvError(f"{label} has too many pixels to decode safely ({e}); send a smaller image.") from None
    except SlimcvError:
        raise
    except (OSError, ValueError, SyntaxError) as e:
        raise SlimcvError(f"Cannot read {label} ({e}); the file is corrupt or not an image.") from e


def check_pixels(size: tuple[int, int], max_pixels: int, label: str) -> None:
    """One sentence when a (width, height) image is over the pixel limit."""
    w, h = size
    if w * h > max_pixels:
        raise SlimcvError(f"{label} is {w}x{h} = {w * h / 1e6:.0f} megapixels, over the limit of "
                          f"{max_pixels / 1e6:.0f}; resize it, or raise the limit (--max-pixels, max_pixels=).")


def to_rgb(im: Image.Image, label: str = "The image") -> Image.Image:
    """RGB, with 16-bit and 32-bit integer and float images scaled by their value range (Pillow's own conversion
    clips them: 16-bit images turn white, float images black)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if arr.size == 0:
            raise SlimcvError(f"{label} is empty (0 pixels); give an image with pixels.")
        if not np.isfinite(arr).all():
            raise SlimcvError(f"{label} holds NaN or infinite values; give an image with finite pixels.")
        lo, hi = float(arr.min()), float(arr.max())
        if im.mode.startswith("I;16"):
            scale = 255 / 65535
        elif im.mode == "F" and lo >= 0 and hi <= 1:
            scale = 255.0
        elif lo >= 0 and hi <= 255:
            scale = 1.0
        elif im.mode == "I" and lo >= 0 and hi <= 65535:
            scale = 255 / 65535  # a 16-bit image read as 32-bit integers
        else:
            raise SlimcvError(f"{label} holds values from {lo:.4g} to {hi:.4g}, outside any image range slimcv knows "
                              "(0-1, 0-255, 0-65535); scale it to 8-bit first.")
        gray = Image.fromarray((arr * scale).round().clip(0, 255).astype(np.uint8), "L")
        return gray.convert("RGB")
    im.load()
    return im.convert("RGB")


def to_pil(image: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An image path, PIL image, HxWx3 uint8 array or HxWx3 float array in [0, 1] as an RGB PIL image."""
    if isinstance(image, Image.Image):
        check_pixels(image.size, max_pixels, "The image")
        im = to_rgb(image)
    elif isinstance(image, (str, Path)):
        im = open_image(image, max_pixels)
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
