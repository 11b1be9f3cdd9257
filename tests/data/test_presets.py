"""Transform presets: image and mask stay aligned through every geometric augmentation; masks fill with ignore."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision import tv_tensors

from slimcv.data.presets import (
    ClassificationPresetEval,
    ClassificationPresetTrain,
    SegmentationPresetEval,
    SegmentationPresetTrain,
)
from slimcv.errors import SlimcvError

IGNORE = 255
STEP = 20  # image value = STEP * (class + 1): 0 is left for pixels filled in by rotate/shift
BLOCK = 16
GRID = [[0, 5, 9, 2], [7, 1, 10, 4], [3, 8, 6, 0], [10, 2, 5, 7]]  # asymmetric: a flip or shift changes it


def encoded_sample(h: int = 64, w: int = 64) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """Big constant blocks whose image colour encodes the mask class exactly."""
    classes = torch.tensor(GRID).repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)[:h, :w]
    value = (STEP * (classes + 1)).to(torch.uint8)
    image = torch.stack([value, value // 2, 255 - value])  # all channels tied to the class
    return tv_tensors.Image(image), tv_tensors.Mask(classes.to(torch.int64))


def decode(image: torch.Tensor) -> torch.Tensor:
    """Class encoded by an un-normalised (mean 0, std 1) float image; -1 for fill, -2 for no class."""
    v = image[0] * 255
    cls = torch.round(v / STEP).long() - 1
    off = (v - STEP * (cls + 1)).abs() > 3
    cls[off] = -2
    cls[v.abs() < 3] = -1
    return cls


def interior(mask: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Pixels whose (2r+1)^2 neighbourhood holds one class (not ignore): away from every boundary."""
    m = mask.float()[None, None]
    k = 2 * radius + 1
    hi = F.max_pool2d(m, k, stride=1, padding=radius)
    lo = -F.max_pool2d(-m, k, stride=1, padding=radius)
    inside = torch.zeros_like(mask, dtype=torch.bool)
    inside[radius:-radius, radius:-radius] = True  # the pooling pads: keep only full neighbourhoods
    return (hi == lo)[0, 0] & (mask != IGNORE) & inside


def assert_aligned(image: torch.Tensor, mask: torch.Tensor, min_fraction: float = 0.3) -> None:
    cls = decode(image)
    sel = interior(mask)
    assert sel.float().mean() >= min_fraction, "too few interior pixels to judge alignment"
    bad = sel & (cls != mask)
    assert not bad.any(), f"{int(bad.sum())} interior pixels where image class != mask class"
    # Pixels filled by rotate/shift: image 0 exactly where the mask is ignore (nearest sampling in both).
    assert torch.equal(cls == -1, mask == IGNORE)


def make_train(augment, size=(64, 64), **kw) -> SegmentationPresetTrain:
    return SegmentationPresetTrain(size=size, augment=augment, mean=(0, 0, 0), std=(1, 1, 1), ignore_index=IGNORE,
                                   **kw)


def test_encoding_helpers_detect_misalignment():
    # The checker must fail on a misaligned pair, or the alignment test below proves nothing.
    image, mask = encoded_sample()
    image_f = image.float() / 255
    assert_aligned(image_f, mask.as_subclass(torch.Tensor), min_fraction=0.5)
    with pytest.raises(AssertionError, match="interior pixels"):
        assert_aligned(image_f.flip(-1), mask.as_subclass(torch.Tensor))
    with pytest.raises(AssertionError, match="interior pixels"):
        assert_aligned(torch.roll(image_f, 5, dims=-2), mask.as_subclass(torch.Tensor))


def test_geometric_augmentations_keep_image_and_mask_aligned():
    t = make_train(["scale_crop", "rotate", "shift", "hflip"], rotate_degrees=20)
    image, mask = encoded_sample()
    filled = 0
    for seed in range(12):
        torch.manual_seed(seed)
        out_image, out_mask = t(image, mask)
        assert type(out_image) is torch.Tensor and type(out_mask) is torch.Tensor
        assert out_image.shape == (3, 64, 64) and out_image.dtype == torch.float32
        assert out_mask.shape == (64, 64) and out_mask.dtype == torch.int64
        assert set(out_mask.unique().tolist()) <= set(range(11)) | {IGNORE}
        assert_aligned(out_image, out_mask)
        filled += bool((out_mask == IGNORE).any())
    assert filled >= 10, "rotate/shift should bring ignore-filled pixels in on nearly every call"


@pytest.mark.parametrize("augment", [["hflip"], ["shift"], ["rotate"], ["scale_crop"], ["pad_crop"]])
def test_each_augmentation_alone_keeps_alignment(augment):
    t = make_train(augment)
    image, mask = encoded_sample()
    changed = 0
    for seed in range(6):
        torch.manual_seed(seed)
        out_image, out_mask = t(image, mask)
        assert_aligned(out_image, out_mask)
        changed += not torch.equal(out_mask, mask.as_subclass(torch.Tensor))
    assert changed >= 1, f"{augment} never changed the sample; the test would not see a misalignment"


def test_rotation_fills_mask_corners_with_ignore_and_image_with_zero():
    t = make_train(["rotate"], size=None, rotate_degrees=30)
    image, mask = encoded_sample()
    corners = [(slice(0, 2), slice(0, 2)), (slice(0, 2), slice(-2, None)), (slice(-2, None), slice(0, 2)),
               (slice(-2, None), slice(-2, None))]
    filled = 0
    for seed in range(8):
        torch.manual_seed(seed)
        out_image, out_mask = t(image, mask)
        assert_aligned(out_image, out_mask)  # includes: image 0 exactly where the mask is ignore
        assert (out_mask[24:40, 24:40] != IGNORE).all()  # the centre never leaves the image
        # Any rotation of more than a degree or two rotates all four corners in from outside.
        filled += all(bool((out_mask[r, c] == IGNORE).all()) for r, c in corners)
    # Angles are uniform in [-30, 30]: only a near-zero draw leaves a corner unfilled.
    assert filled >= 6, f"only {filled} of 8 rotations filled the mask corners with ignore ({IGNORE})"


def test_custom_ignore_index_is_the_fill():
    t = SegmentationPresetTrain(size=None, augment=["shift"], mean=(0, 0, 0), std=(1, 1, 1), ignore_index=99,
                                shift_fraction=0.3)
    image, mask = encoded_sample()
    values = set()
    for seed in range(4):
        torch.manual_seed(seed)
        values |= set(t(image, mask)[1].unique().tolist())
    assert 99 in values and IGNORE not in values


def test_train_preset_normalises_with_mean_and_std():
    t = SegmentationPresetTrain(size=None, augment=[], mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    image, mask = encoded_sample()
    out_image, out_mask = t(image, mask)
    torch.testing.assert_close(out_image, (image.float() / 255 - 0.5) / 0.25)
    assert torch.equal(out_mask, mask.as_subclass(torch.Tensor))


def test_eval_preset_resizes_image_but_not_mask():
    image, mask = encoded_sample(48, 64)
    out_image, out_mask = SegmentationPresetEval(size=(24, 32), mean=(0, 0, 0), std=(1, 1, 1))(image, mask)
    assert out_image.shape == (3, 24, 32) and out_image.dtype == torch.float32
    assert type(out_mask) is torch.Tensor and torch.equal(out_mask, mask.as_subclass(torch.Tensor))
    assert SegmentationPresetEval(size=None, mean=(0, 0, 0), std=(1, 1, 1))(image).shape == (3, 48, 64)


def test_classification_presets_output_size():
    image = tv_tensors.Image(torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8))
    train = ClassificationPresetTrain(size=32, augment=["pad_crop", "hflip", "color_jitter"], mean=(0, 0, 0),
                                      std=(1, 1, 1))
    out = train(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert ClassificationPresetEval(size=32, mean=(0, 0, 0), std=(1, 1, 1))(image).shape == (3, 32, 32)
    assert ClassificationPresetEval(size=160, mean=(0, 0, 0), std=(1, 1, 1))(image).shape == (3, 160, 160)


@pytest.mark.parametrize("kwargs, match", [
    ({"augment": ["hflip", "mixup"]}, "mixup"),
    ({"augment": ["scale_crop"], "size": None}, "scale_crop"),
    ({"augment": ["pad_crop"], "size": None}, "pad_crop"),
    ({"augment": [], "size": (1, 2, 3)}, "one int or"),
])
def test_segmentation_preset_bad_arguments(kwargs, match):
    kwargs = {"size": 32, "mean": (0, 0, 0), "std": (1, 1, 1), **kwargs}
    with pytest.raises(SlimcvError, match=match):
        SegmentationPresetTrain(**kwargs)

