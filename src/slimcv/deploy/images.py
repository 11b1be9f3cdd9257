"""Images as users hand them over (a path, a PIL image, a uint8 or float array) made into RGB PIL images."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from slimcv.errors import SlimcvError


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
