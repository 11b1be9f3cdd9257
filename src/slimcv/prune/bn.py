"""BatchNorm re-estimation: after channels are removed, each BatchNorm's running statistics describe inputs
that no longer exist; a few forward passes over training images measure them again."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, batches: Iterable, device: torch.device | str = "cpu") -> int:
    """Reset every BatchNorm's running mean and variance and set them to the average over ``batches`` (image
    tensors, or (images, targets) pairs); weights are not touched. Returns the number of images seen: with no
    batch of at least two images the statistics are left as they were (never reset without re-estimating)."""
    norms = [m for m in model.modules() if isinstance(m, BATCHNORMS) and m.track_running_stats]
    if not norms:
        return 0
    usable = (b for b in batches if _images(b).shape[0] >= 2)  # train-mode BatchNorm needs two values a channel
    first = next(usable, None)
    if first is None:
        return 0
    was_training = model.training
    momenta = {m: m.momentum for m in norms}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches, not an exponential one
    from slimcv.models.detection import head_outputs, is_detector

    run = (lambda x: head_outputs(model, x)) if is_detector(model) else model  # a detector in train mode wants boxes
    model.train()
    seen = 0
    try:
        for batch in (first, *usable):
            images = _images(batch)
            run(images.to(device))
            seen += images.shape[0]
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        model.train(was_training)
    return seen


def _images(batch) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch
