"""BatchNorm re-estimation after structured pruning."""
from __future__ import annotations

import torch
from torch import nn

import slimcv
from slimcv.models import create_model
from slimcv.prune.bn import reestimate_batchnorm
from slimcv.prune.structured import prune_structured


def _pruned_resnet():
    torch.manual_seed(0)
    net = create_model("resnet8", 10)
    net.train()
    with torch.no_grad():  # statistics of the unpruned network, as a trained one has
        for _ in range(3):
            net(torch.randn(16, 3, 32, 32) * 2 + 1)
    prune_structured(net, torch.randn(1, 3, 32, 32), ratio=0.5, num_classes=10)
    return net.eval()


def test_reestimated_statistics_are_the_average_over_the_batches():
    net = _pruned_resnet()
    batches = [torch.randn(8, 3, 32, 32) * 3 - 1 for _ in range(2)]
    bn = next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    inputs = []
    hook = bn.register_forward_pre_hook(lambda m, args: inputs.append(args[0].detach().clone()))
    before = bn.running_mean.clone()
    momentum = bn.momentum
    assert reestimate_batchnorm(net, batches) == 16
    hook.remove()
    assert len(inputs) == 2
    expected = torch.stack([x.mean(dim=(0, 2, 3)) for x in inputs]).mean(0)  # cumulative average of batch means
    torch.testing.assert_close(bn.running_mean, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(before, bn.running_mean)
    assert bn.momentum == momentum and not net.training  # settings and mode as they were


def test_prune_stage_reestimates_batchnorm_unless_told_not_to(tmp_path):
    data = {"spec": "synthetic-shapes", "options": {"size": 32, "length": 32}, "batch_size": 8, "workers": 0,
            "val_subset": 8}
    stats = {}
    for n in (0, 4):
        torch.manual_seed(0)
        net = create_model("unet_small", 4, base_width=8, depth=2)
        r = slimcv.prune(net, data=data, remove=0.3, finetune_epochs=0, bn_batches=n, progress=False,
                         latency_runs=0)
        stats[n] = {k: v for k, v in r.model.state_dict().items() if k.endswith("running_mean")}
    assert stats[0].keys() == stats[4].keys() and stats[0]
    # a fresh network's running means are zero; re-estimation measured real ones
    assert all(torch.count_nonzero(v) == 0 for v in stats[0].values())
    assert any(torch.count_nonzero(v) > 0 for v in stats[4].values())
