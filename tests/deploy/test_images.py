"""Decoding what users send: a pixel limit checked from the header, value ranges respected, memory bounded."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from slimcv.deploy.images import open_image, pixel_limit, to_pil
from slimcv.deploy.predictor import upsample_argmax
from slimcv.errors import SlimcvError


def _bomb(path, side=10_000):
    """A 10000x10000 black PNG: a few KiB on disk, 300 MB once decoded."""
    Image.new("1", (side, side)).save(path, optimize=True)
    return path


def test_an_image_over_the_pixel_limit_is_refused_before_its_pixels_are_decoded(tmp_path):
    path = _bomb(tmp_path / "bomb.png")
    assert path.stat().st_size < 100_000
    tracemalloc.start()
    with pytest.raises(SlimcvError, match=r"10000x10000 = 100 megapixels, over the limit of 50"):
        open_image(path, pixel_limit(None))
    with pytest.raises(SlimcvError, match="megapixels"):
        open_image(path.read_bytes(), pixel_limit((64, 64)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2**20  # nothing near the 300 MB the pixels would take
    assert pixel_limit((2000, 2000)) == 256_000_000 and pixel_limit(None, 10) == 10  # sized from the model


def test_16_bit_and_float_images_are_read_by_their_value_range(tmp_path):
    arr16 = np.full((8, 8), 30_000, np.uint16)
    Image.fromarray(arr16).save(tmp_path / "deep.png")
    rgb = np.asarray(open_image(tmp_path / "deep.png"))
    assert rgb.shape == (8, 8, 3) and abs(int(rgb[0, 0, 0]) - round(30_000 * 255 / 65535)) <= 1  # not white
    as_float = Image.fromarray(np.full((8, 8), 0.5, np.float32), "F")
    assert abs(int(np.asarray(to_pil(as_float))[0, 0, 0]) - 128) <= 1  # not black
    with pytest.raises(SlimcvError, match="outside any image range"):
        to_pil(Image.fromarray(np.full((8, 8), -3.0, np.float32), "F"))


def test_segmentation_postprocessing_memory_stays_bounded_and_matches_evaluation():
    torch.manual_seed(0)
    small = torch.randn(5, 7, 9)
    mask, _ = upsample_argmax(small.numpy(), 31, 45)
    ref = F.interpolate(small[None], size=(31, 45), mode="bilinear", align_corners=False)[0].argmax(0).numpy()
    assert (mask == ref).mean() > 0.999
    logits = np.random.default_rng(0).standard_normal((11, 64, 64), dtype=np.float32)
    tracemalloc.start()
    mask, _ = upsample_argmax(logits, 4000, 4000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert mask.shape == (4000, 4000)
    assert peak < 400 * 2**20  # 11 full-size float maps alone would be 704 MiB


def test_predict_skips_a_bomb_with_a_sentence_and_goes_on(seg, tmp_path, capsys):
    from slimcv.cli import main

    path, images = seg
    (tmp_path / "in").mkdir()
    Image.fromarray(images[0]).save(tmp_path / "in" / "ok.png")
    _bomb(tmp_path / "in" / "huge.png")
    assert main(["predict", str(path), str(tmp_path / "in"), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "huge.png" in err and "megapixels" in err and "Traceback" not in err
    assert (tmp_path / "out" / "predict.json").is_file()
