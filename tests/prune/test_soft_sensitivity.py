import json

import torch
from PIL import Image
from torch import nn

from slimcv.models import create_model
from slimcv.prune.schedule import prune_to_target
from slimcv.prune.sensitivity import analyze, plot, prunable_layers
from slimcv.prune.soft import remove_soft_pruned, soft_prune_step, zeroed_filters


def _unet():
    torch.manual_seed(0)
    return create_model("unet_small", 3, base_width=8, depth=2)


def test_soft_pruning_zeroes_then_revives_then_removes_exactly():
    model = _unet().eval()
    x = torch.randn(4, 3, 32, 32)
    history = soft_prune_step(model, x[:1], num_classes=3, ratio=0.25)
    zeroed = sum(len(idxs) for _, _, idxs in history)
    assert zeroed > 0 and zeroed_filters(model, history) == zeroed
    # the zeroed filters stay in the network and keep learning: one SGD step brings them back
    trial = create_model("unet_small", 3, base_width=8, depth=2)
    trial.load_state_dict(model.state_dict())
    with torch.no_grad():  # like a trained network: BatchNorm shifts that let the ReLUs pass gradient
        for m in trial.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.bias.uniform_(0.1, 0.5)
    trial.train()
    opt = torch.optim.SGD(trial.parameters(), lr=0.1)
    nn.functional.cross_entropy(trial(x), torch.randint(0, 3, (4, 32, 32))).backward()
    opt.step()
    assert zeroed_filters(trial, history) < zeroed / 2
    # removing the still-zeroed filters shrinks the model; with untrained BatchNorm (zero shift) it is exact
    before = model(x)
    params = sum(p.numel() for p in model.parameters())
    result = remove_soft_pruned(model, x[:1], history)
    assert result.params_after < 0.8 * params
    assert torch.allclose(model(x), before, atol=1e-5)


def test_sensitivity_finds_the_layer_that_matters_and_derives_ratios(tmp_path):
    model = _unet().eval()
    x = torch.randn(6, 3, 32, 32)
    layers = prunable_layers(model, x[:1], 3)
    assert layers and all(isinstance(dict(model.named_modules())[n], nn.Conv2d) for n in layers)
    reference = model(x).detach()

    def fidelity(m):  # negative output error vs the unpruned model: 0 = untouched
        with torch.no_grad():
            return -float((m(x) - reference).abs().mean())

    sens = analyze(model, x[:1], fidelity, num_classes=3, ratios=(0.25, 0.75), layers=layers[:3], progress=False)
    assert sens.baseline == 0 and set(sens.curves) == set(layers[:3])
    for curve in sens.curves.values():
        assert curve[0.75] <= curve[0.25] <= 0  # pruning more never helps fidelity here
    ratios = sens.layer_ratios(max_drop=1e9)
    assert all(r == 0.75 for r in ratios.values())
    assert all(r == 0.0 for r in sens.layer_ratios(max_drop=1e-12).values())
    png = plot(sens, tmp_path / "s.png")
    assert Image.open(png).size[0] > 400
    json.dumps(sens.to_dict())


def test_latency_target_makes_the_model_measurably_faster():
    torch.manual_seed(0)
    model = create_model("unet_small", 3, base_width=16, depth=2).eval()
    x = torch.randn(1, 3, 96, 96)
    steps = prune_to_target(model, x, num_classes=3, remove=0.5, target="latency")
    assert 0.3 < steps[-1]["achieved_remove"] < 0.7, steps


def test_soft_pruning_resets_batchnorm_statistics_of_zeroed_channels():
    model = _unet().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # statistics gathered while every filter was alive, with small variances
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(0.5, 1.0)
                m.running_var.fill_(1e-3)
    history = soft_prune_step(model, x[:1], num_classes=3, ratio=0.5)
    bn = dict(model.named_modules())["encoders.0.1"]
    zeroed = [i for name, _, idxs in history if name == "encoders.0.0" for i in idxs]
    assert zeroed and bool((bn.running_mean[zeroed] == 0).all()) and bool((bn.running_var[zeroed] == 1).all())
    seen = {}
    bn.register_forward_hook(lambda _m, _i, out: seen.setdefault("out", out.detach()))
    model(x)
    # a zeroed channel emits its shift beta, not gamma * (-mean) / sqrt(var + eps)
    expected = bn.bias[zeroed].detach().view(1, -1, 1, 1).expand_as(seen["out"][:, zeroed])
    assert torch.allclose(seen["out"][:, zeroed], expected, atol=1e-5)
