"""Fixtures for the data-layer tests: the shared real-data folder and tiny dataset trees written to tmp_path."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

# tests/data/conftest.py -> parents[2] is the repo root; the real data sits beside it in ../shared/data.
SHARED_DATA = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()


def shared_dataset(name: str) -> Path:
    """Path of a real dataset in ../shared/data, or skip the test when it is not there."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is not available")
    return path


# Session-scoped (the CIFAR-10 tests build its 50,000-file listing once per module); named apart from any
# camvid_root/cifar_root fixtures in tests/conftest.py so neither shadows the other.
@pytest.fixture(scope="session")
def real_camvid() -> Path:
    return shared_dataset("camvid")


@pytest.fixture(scope="session")
def real_cifar10() -> Path:
    return shared_dataset("cifar10")


def write_rgb(path: Path, array: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 array as an RGB image (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode="RGB").save(path)
    return path


def write_mask(path: Path, array: np.ndarray) -> Path:
    """Write an (H, W) array of class indices as a one-channel (mode L) PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode="L").save(path)
    return path


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.fixture
def files() -> SimpleNamespace:
    """The writers above, for tests (importing from conftest.py is fragile)."""
    return SimpleNamespace(rgb=write_rgb, mask=write_mask, random_image=random_image)


MakeCamvid = Callable[..., Path]


@pytest.fixture
def make_camvid(tmp_path: Path) -> MakeCamvid:
    """Write a CamVid-layout tree (SegNet list files with relative paths) and return its root.

    ``masks`` is a list of (H, W) arrays, one sample each; images are random RGB of the same size
    unless ``image_sizes`` gives another (H, W) for a sample.
    """

    def make(masks: Sequence[np.ndarray], split: str = "train", image_sizes: dict[int, tuple[int, int]] | None = None,
             root: Path | None = None) -> Path:
        root = root or tmp_path / "camvid"
        lines = []
        for i, mask in enumerate(masks):
            h, w = (image_sizes or {}).get(i, mask.shape)
            name = f"s{i:03d}.png"
            write_rgb(root / split / name, random_image(h, w, seed=i))
            write_mask(root / f"{split}annot" / name, mask)
            lines.append(f"{split}/{name} {split}annot/{name}")
        root.mkdir(parents=True, exist_ok=True)
        (root / f"{split}.txt").write_text("".join(f"{line}\n" for line in lines))
        return root

    return make
