"""Calibration data for static quantization: real training images, preprocessed like validation, fed one by one."""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader
from torch.utils.data import Dataset

from slimcv.errors import SlimcvError


class ImageCalibrationReader(CalibrationDataReader):
    """Yields ``{input_name: (1, C, H, W) float32}`` for the first ``n`` images of ``dataset`` (spread evenly)."""

    def __init__(self, dataset: Dataset, n: int, input_name: str, input_shape: Sequence | None = None) -> None:
        if n < 1:
            raise SlimcvError(f"Calibration needs at least one image, got calibration_images={n}; use 32-256.")
        if len(dataset) == 0:
            raise SlimcvError("The calibration set is empty: the training split holds no images; check the dataset.")
        step = max(1, len(dataset) // n)
        self.indices = list(range(0, len(dataset), step))[:n]
        self.dataset, self.input_name = dataset, input_name
        self.size = None
        self.first = self._image(0)
        expected = list(input_shape) if input_shape is not None else None
        if expected and len(expected) == 4 and all(isinstance(d, int) and d > 0 for d in expected[2:]) and \
                tuple(self.first.shape[2:]) != tuple(expected[2:]):
            self.size = (int(expected[2]), int(expected[3]))  # a file exported for one size: resize to it
            warnings.warn(f"The model takes {self.size[0]}x{self.size[1]} images; resizing the "
                          f"{self.first.shape[2]}x{self.first.shape[3]} calibration images to it.", stacklevel=2)
            self.first = self._image(0)
        check_shape(tuple(self.first.shape), input_shape)
        self._pos = 0

    def __len__(self) -> int:
        return len(self.indices)

    def _image(self, k: int) -> np.ndarray:
        item = self.dataset[self.indices[k]]
        image = item[0] if isinstance(item, (tuple, list)) else item
        if not torch.is_tensor(image) or image.ndim != 3:
            raise SlimcvError(f"Calibration sample {self.indices[k]} is not a (C, H, W) tensor image "
                              f"(got {type(image).__name__}); use the dataset with its eval transforms.")
        if self.size is not None:
            image = torch.nn.functional.interpolate(image[None].float(), size=self.size, mode="bilinear",
                                                    align_corners=False, antialias=True)[0]
        return np.ascontiguousarray(image.numpy()[None], dtype=np.float32)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= len(self.indices):
            return None
        x = self.first if self._pos == 0 else self._image(self._pos)
        self._pos += 1
        return {self.input_name: x}

    def rewind(self) -> None:
        self._pos = 0


def check_shape(shape: tuple[int, ...], expected: Sequence | None) -> None:
    """Raise when a (1, C, H, W) calibration array does not fit the model input (symbolic dims match anything)."""
    if expected is None:
        return
    if len(shape) != len(expected):
        raise SlimcvError(f"Calibration images have shape {shape} but the model input is {tuple(expected)}; "
                          "calibrate with images of the model's task and channel count.")
    for i, (got, want) in enumerate(zip(shape, expected)):
        if i > 0 and isinstance(want, int) and want > 0 and got != want:
            raise SlimcvError(f"Calibration images have shape {shape} but the model expects {tuple(expected)} "
                              f"(axis {i}); calibrate at the export size or export with dynamic height/width.")
