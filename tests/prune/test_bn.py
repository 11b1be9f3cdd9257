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


def test_no_batch_leaves_the_statistics_as_they_were():
    net = _pruned_resnet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert reestimate_batchnorm(net, []) == 0
    assert reestimate_batchnorm(net, [torch.randn(1, 3, 32, 32)]) == 0  # one image cannot give a batch statistic
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_a_training_set_smaller_than_one_batch_never_collapses_a_pruned_model(tmp_path, capsys):
    """Four training images and batch 8: the statistics are re-estimated from the four, never reset to nothing."""
    from slimcv.data import from_datasets
    from torch.utils.data import TensorDataset

    torch.manual_seed(0)
    images = torch.rand(12, 3, 32, 32)
    labels = torch.arange(12) % 3
    data = from_datasets(TensorDataset(images[:4], labels[:4]), TensorDataset(images[4:], labels[4:]), num_classes=3,
                         task="classification")
    net = create_model("resnet8", 3)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(16, 3, 32, 32))
    net.eval()
    result = slimcv.prune(net, data=data, remove=0.3, finetune_epochs=0, latency_runs=0, progress=False,
                          out_dir=tmp_path / "p")
    assert f"saved the pruned model in {tmp_path / 'p'}; next: slimcv quantize" in capsys.readouterr().err
    with torch.no_grad():
        logits = result.model.eval()(images[4:])
    assert logits.abs().max() > 1e-3 and torch.isfinite(logits).all()
    bn = next(m for m in result.model.modules() if isinstance(m, nn.BatchNorm2d))
    assert bn.running_var.min() > 0 and not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
