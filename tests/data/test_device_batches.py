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
    from slimcv.data.device_batches import batch_augment_for
    from slimcv.data.presets import DetectionPresetTrain

    # detection crops without a training size with RandomIoUCrop, which the batched path does not reproduce
    iou_crop = DetectionPresetTrain(size=None, augment=["scale_crop"], mean=(0.0,) * 3, std=(1.0,) * 3)
    assert batch_augment_for(iou_crop) is None
    sized = DetectionPresetTrain(size=48, augment=["scale_crop"], mean=(0.0,) * 3, std=(1.0,) * 3)
    assert batch_augment_for(sized).boxes


def test_training_on_batches_made_on_the_device_learns(tmp_path):
    import slimcv

    data = {"spec": "synthetic-shapes", "options": {"size": 32, "length": 128}, "batch_size": 16, "workers": 0,
            "val_subset": 32, "augment": ["hflip", "shift"], "batched_augment": "on"}
    r = slimcv.train({"model": "unet", "model_kwargs": {"base_width": 4, "depth": 2}, "data": data, "epochs": 4,
                      "optim": {"name": "adam", "lr": 0.01}, "progress": False, "tensorboard": False,
                      "out_dir": str(tmp_path / "run")})
    losses = [h["train"]["loss"] for h in r.history]
    assert losses[-1] < losses[0] * 0.8 and r.best["value"] > 30


def _detection(augment, length=96):
    return load_data({"spec": "synthetic-shapes:detection", "augment": augment, "size": [48, 48], "batch_size": 16,
                      "options": {"size": 64, "length": length}})


def test_boxes_follow_the_warp_of_their_pixels():
    from slimcv.data.device_batches import BatchAugment, augment_batch

    image = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    image[:, :, 20:40, 10:30] = 255  # one white box
    rows = torch.tensor([[[10.0, 20.0, 30.0, 40.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0, -1.0, 0.0]]])  # and a padding row
    aug = BatchAugment((48, 48), ("scale_crop", "rotate", "shift", "hflip"), (0.0,) * 3, (1 / 255,) * 3, None, 20.0,
                       0.1, (0.5, 1.0), (0.75, 4 / 3), False, (0.0,) * 4, boxes=True)
    x, targets = augment_batch(image.repeat(64, 1, 1, 1), rows.repeat(64, 1, 1), aug, torch.Generator().manual_seed(0))
    checked = 0
    for img, t in zip(x, targets):
        ys, xs = torch.nonzero(img[0] > 128, as_tuple=True)
        if len(t["boxes"]) == 0 or len(xs) < 20:
            continue  # cropped out (the box is dropped with its pixels)
        seen = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
        assert (t["boxes"][0] - seen).abs().max() < 2.5, (t["boxes"][0], seen)
        assert t["labels"].tolist() == [2] and t["iscrowd"].tolist() == [0]
        checked += 1
    assert checked > 30


def test_detection_batches_keep_the_presets_box_statistics():
    augment = ["scale_crop", "rotate", "shift", "hflip", "color_jitter"]
    bundle = _detection(augment)
    batched = device_batches(bundle.train, 16, CPU, mode="on", quiet=True)
    assert isinstance(batched, DeviceBatches)

    def stats(loader):
        counts, areas = [], []
        for e in range(4):
            loader.sampler.set_epoch(e)
            for _, targets in loader:
                for t in targets:
                    b = t["boxes"]
                    counts.append(len(b))
                    areas += ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) / 48 ** 2).tolist()
        return np.mean(counts), np.mean(areas)

    device, cpu = stats(batched), stats(make_loader(bundle.train, 16, train=True, workers=0))
    assert abs(device[0] - cpu[0]) < 0.25, (device, cpu)  # boxes kept per image
    assert abs(device[1] - cpu[1]) < 0.25 * cpu[1], (device, cpu)  # their size relative to the image


def test_a_detector_trains_on_batches_made_on_the_device(tmp_path, capfd):
    import slimcv

    data = {"spec": "synthetic-shapes:detection", "options": {"size": 48, "length": 64}, "batch_size": 16,
            "workers": 0, "val_subset": 16, "size": [48, 48], "batched_augment": "on"}
    r = slimcv.train("slimdet", data=data, epochs=3, out_dir=str(tmp_path / "det"), progress=False,
                     tensorboard=False, model_kwargs={"backbone": "mobilenet_v3_small", "width": 0.25,
                                                      "fpn_channels": 16, "head_convs": 1},
                     optim={"name": "adamw", "lr": 0.003})
    losses = [h["train"]["loss"] for h in r.history]
    assert losses[-1] < losses[0] and "map" in r.metrics
    said = capfd.readouterr()
    assert "batched augmentation on cpu" in said.out + said.err
