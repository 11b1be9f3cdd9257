"""Batches made on the training device: the same samples, order and augmentation statistics as the per-sample loader."""
import numpy as np
import pytest
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from slimcv.data import load_data, make_loader
from slimcv.data.device_batches import DeviceBatches, device_batches
from slimcv.data.presets import SegmentationPresetTrain

CPU = torch.device("cpu")


def _data(augment, size=32, length=96):
    return load_data({"spec": "synthetic-shapes", "augment": augment, "size": [size, size], "batch_size": 16,
                      "options": {"size": 40, "length": length}})


def test_without_augmentation_the_batches_are_the_loaders_in_the_same_order():
    bundle = _data([])  # 40 px images resized to 32: once on the device, antialiased like v2.Resize
    batches = device_batches(bundle.train, 16, CPU, mode="on", seed=3, quiet=True)
    loader = make_loader(bundle.train, 16, train=True, workers=0, seed=3)
    assert isinstance(batches, DeviceBatches) and len(batches) == len(loader) == 6
    for epoch in (0, 1):
        batches.sampler.set_epoch(epoch)
        loader.sampler.set_epoch(epoch)
        for (x, y), (x2, y2) in zip(batches, loader):
            assert torch.equal(y, y2)
            assert (x - x2).abs().max() < 0.05  # uint8 rounding of the resized pixels


def _stats(loader, epochs=4):
    means, ignored, classes = [], [], torch.zeros(4)
    for e in range(epochs):
        loader.sampler.set_epoch(e)
        for x, y in loader:
            means.append(torch.stack([x.mean((0, 2, 3)), x.std((0, 2, 3))]))
            ignored.append((y == 255).float().mean())
            classes += torch.bincount(y[y != 255].flatten(), minlength=4)[:4].float()
    return torch.stack(means).mean(0), float(torch.stack(ignored).mean()), classes / classes.sum()


@pytest.mark.parametrize("augment", [["rotate", "shift", "pad_crop", "hflip"],
                                     ["scale_crop", "rotate", "shift", "hflip", "color_jitter"]])
def test_augmentation_statistics_match_the_per_sample_presets(augment):
    bundle = _data(augment, length=160)
    device, cpu = _stats(device_batches(bundle.train, 16, CPU, mode="on", quiet=True)), \
        _stats(make_loader(bundle.train, 16, train=True, workers=0))
    assert torch.allclose(device[0], cpu[0], atol=0.05), (device[0], cpu[0])  # pixel mean and spread per channel
    assert abs(device[1] - cpu[1]) < 0.02, (device[1], cpu[1])  # the share of pixels a warp uncovers (ignored)
    assert torch.allclose(device[2], cpu[2], atol=0.02)  # the class balance of what stays in view
    assert cpu[1] > 0.03  # the warps did uncover pixels: the comparison can fail


class _Coded(Dataset):
    """Images whose red channel codes the mask (class * 60), so warps that moved one and not the other show."""

    def __init__(self, transform):
        rng = np.random.default_rng(0)
        self.masks = [torch.from_numpy(rng.integers(0, 4, (4, 4))).repeat_interleave(8, 0).repeat_interleave(8, 1)
                      for _ in range(32)]
        self.transform = transform

    def __len__(self):
        return len(self.masks)

    def load(self, i):
        m = self.masks[i]
        image = torch.stack([m * 60, torch.full_like(m, 90), torch.full_like(m, 30)]).to(torch.uint8)
        return tv_tensors.Image(image), tv_tensors.Mask(m)

    def __getitem__(self, i):
        return self.transform(*self.load(i))


def test_masks_move_with_their_images():
    preset = SegmentationPresetTrain(size=(32, 32), augment=("scale_crop", "rotate", "shift", "hflip"),
                                     mean=(0, 0, 0), std=(1, 1, 1))
    x, y = next(iter(device_batches(_Coded(preset), 32, CPU, mode="on", quiet=True)))
    red = torch.round(x[:, 0] * 255 / 60)
    seen = y != 255
    assert seen.float().mean() > 0.5 and (y == 255).any()
    assert (red[seen] == y[seen]).float().mean() > 0.9  # all but the blurred edges of each cell
    assert (x[:, 1][~seen] == 0).all()  # uncovered pixels are filled with 0 like the presets' fill


def test_auto_takes_the_device_path_only_on_cuda_and_only_when_it_fits(monkeypatch):
    bundle = _data(["hflip"])
    assert device_batches(bundle.train, 16, CPU, mode="auto") is None  # a CPU keeps its loader unless asked
    assert device_batches(bundle.train, 16, CPU, mode="off") is None
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1024, 2**34))  # 1 KiB free
    assert device_batches(bundle.train, 16, torch.device("cuda"), mode="auto") is None
    detection = load_data({"spec": "synthetic-shapes:detection", "options": {"size": 64, "length": 8}})
    assert device_batches(detection.train, 4, CPU, mode="on", quiet=True) is None  # boxes: the per-sample loader


def test_training_on_batches_made_on_the_device_learns(tmp_path):
    import slimcv

    data = {"spec": "synthetic-shapes", "options": {"size": 32, "length": 128}, "batch_size": 16, "workers": 0,
            "val_subset": 32, "augment": ["hflip", "shift"], "batched_augment": "on"}
    r = slimcv.train({"model": "unet", "model_kwargs": {"base_width": 4, "depth": 2}, "data": data, "epochs": 4,
                      "optim": {"name": "adam", "lr": 0.01}, "progress": False, "tensorboard": False,
                      "out_dir": str(tmp_path / "run")})
    losses = [h["train"]["loss"] for h in r.history]
    assert losses[-1] < losses[0] * 0.8 and r.best["value"] > 30
