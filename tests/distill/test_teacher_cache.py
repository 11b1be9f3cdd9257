import json

import numpy as np
import pytest
import torch

from slimcv.data import build_dataset
from slimcv.data.presets import SegmentationPresetTrain
from slimcv.distill.teacher_cache import (
    CachedTeacherDataset,
    CacheFormat,
    build_cache,
    encode,
    open_cache,
    soft_to_logits,
)
from slimcv.models import create_model


def _one_hot_cache(tmp_path, ds, dtype="uint8"):
    maps = []
    for i in range(len(ds)):
        mask = torch.as_tensor(ds.load(i)[1])
        maps.append(torch.nn.functional.one_hot(mask, 4).permute(2, 0, 1).float())
    enc = encode(torch.stack(maps), CacheFormat(scale=1.0, dtype=dtype))
    path = tmp_path / "cache"
    path.mkdir()
    np.save(path / "maps.npy", enc)
    (path / "meta.json").write_text(json.dumps({"num_classes": 4, "samples": len(ds),
                                                "format": {"scale": 1.0, "dtype": dtype, "topk": 2}}))
    return open_cache(path)


@pytest.mark.parametrize("dtype", ["uint8", "fp16", "topk"])
def test_cached_map_stays_aligned_through_geometric_augmentation(tmp_path, dtype):
    ds = build_dataset("synthetic-shapes", "train", size=48, length=6)
    cache = _one_hot_cache(tmp_path, ds, dtype)
    preset = SegmentationPresetTrain(size=(40, 40), augment=["scale_crop", "rotate", "shift", "hflip", "color_jitter"],
                                     mean=(0.5,) * 3, std=(0.25,) * 3, rotate_degrees=30, shift_fraction=0.2)
    wrapped = CachedTeacherDataset(ds, cache, preset)
    checked = 0
    for seed in range(5):
        torch.manual_seed(seed)
        for i in range(len(wrapped)):
            image, (mask, soft) = wrapped[i]
            assert soft.shape == (4, *mask.shape) == (4, *image.shape[-2:])
            valid = mask != 255
            assert torch.equal(soft_to_logits(soft).argmax(0)[valid], mask[valid])
            checked += int(valid.sum())
    assert checked > 10_000


def test_stale_cache_is_detected_and_rebuilt(tmp_path):
    ds = build_dataset("synthetic-shapes", "train", size=32, length=4)
    teacher = create_model("unet_small", 4, base_width=4, depth=2)
    args = dict(size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3, num_classes=4,
                data_id={"spec": "synthetic-shapes", "size": 32})
    a = build_cache(teacher, ds, tmp_path, fmt=CacheFormat(), **args)
    again = build_cache(teacher, ds, tmp_path, fmt=CacheFormat(), **args)
    assert again.path == a.path
    with torch.no_grad():
        teacher.head.weight.add_(0.1)  # new teacher weights -> new key
    b = build_cache(teacher, ds, tmp_path, fmt=CacheFormat(), **args)
    assert b.path != a.path
    c = build_cache(teacher, ds, tmp_path, fmt=CacheFormat(dtype="fp16"), **args)
    d = build_cache(teacher, ds, tmp_path, fmt=CacheFormat(), **{**args, "data_id": {"spec": "other"}})
    assert len({a.path, b.path, c.path, d.path}) == 4
    assert a.maps.shape == (4, 4, 16, 16) and a.maps.dtype == np.uint8  # scale 0.5 of 32x32
    assert c.maps.dtype == np.float16


def test_uint8_map_matches_teacher_probabilities(tmp_path):
    ds = build_dataset("synthetic-shapes", "train", size=32, length=2)
    teacher = create_model("unet_small", 4, base_width=4, depth=2).eval()
    cache = build_cache(teacher, ds, tmp_path, size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3, num_classes=4,
                        fmt=CacheFormat(scale=1.0), data_id={})
    img = ds.load(0)[0].float() / 255
    with torch.no_grad():
        p = torch.softmax(teacher(((img - 0.5) / 0.25)[None]), 1)[0]
    stored = cache.soft_map(0, (32, 32)).float() / 255
    assert (stored - p).abs().max().item() < 1 / 255 + 1e-4


def test_auto_scale_keeps_the_training_size_while_the_cache_fits():
    from slimcv.distill.teacher_cache import auto_scale

    assert auto_scale(367, 11, (176, 240)) == 1.0  # CamVid: 163 MiB of uint8 maps
    assert auto_scale(367, 11, (176, 240), "fp16") == 1.0
    # Cityscapes at 512x1024, 19 classes: 28 GiB at full size, 1.8 GiB at a quarter
    assert auto_scale(2975, 19, (512, 1024)) == 0.25
    assert auto_scale(10, 4, (64, 64), limit=10 * 4 * 32 * 32) == 0.5
    assert auto_scale(10, 4, (64, 64), "topk", topk=1, limit=10 * 2 * 64 * 64) == 1.0


def test_a_damaged_cache_is_named_and_built_again(tmp_path):
    from slimcv.errors import SlimcvError

    ds = build_dataset("synthetic-shapes", "train", size=32, length=4)
    teacher = create_model("unet_small", 4, base_width=4, depth=2)
    args = dict(size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3, num_classes=4,
                data_id={"spec": "synthetic-shapes", "size": 32}, fmt=CacheFormat())
    a = build_cache(teacher, ds, tmp_path, **args)
    good = np.array(a.maps)
    (a.path / "maps.npy").write_bytes((a.path / "maps.npy").read_bytes()[:100])  # a killed copy, truncated
    with pytest.raises(SlimcvError, match="teacher cache .* is damaged"):
        open_cache(a.path)
    again = build_cache(teacher, ds, tmp_path, **args)
    assert np.array_equal(np.array(again.maps), good)
