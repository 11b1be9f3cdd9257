import pytest
import torch
from torch import nn

from slimcv.engine.checkpoint import load_run_model
from slimcv.errors import SlimcvError
from slimcv.models import create_model
from slimcv.prune.structured import IMPORTANCES, output_layers, prune_structured, save_pruned

FAMILIES = [("unet_small", {"base_width": 8, "depth": 3}, 64), ("resnet20", {}, 32), ("resnet18", {}, 64),
            ("mobilenet_v3_small", {}, 64), ("lraspp_mobilenet_v3_large", {}, 64),
            ("deeplabv3_mobilenet_v3_large", {}, 64)]


@pytest.mark.parametrize("name,kwargs,size", FAMILIES)
def test_structured_pruning_shrinks_runs_and_reloads(name, kwargs, size, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, 5, **kwargs).eval()
    x = torch.randn(1, 3, size, size)
    before = model(x)
    result = prune_structured(model, x, num_classes=5, ratio=0.3)
    after = model(x)
    assert after.shape == before.shape  # class outputs untouched
    assert result.params_after < 0.8 * result.params_before
    assert result.macs_after < result.macs_before
    spec = {"name": name, "num_classes": 5, "kwargs": kwargs}
    save_pruned(model, spec, result, tuple(x.shape), tmp_path / "pruned")
    reloaded, saved = load_run_model(tmp_path / "pruned")
    assert saved["pruning"]["params_after"] == result.params_after
    assert torch.allclose(reloaded.eval()(x), after, atol=1e-5)


class Planted(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))))


@pytest.mark.parametrize("importance", ["l1", "l2", "bn_scale", "taylor"])
def test_each_importance_prunes_a_planted_dead_channel_first(importance):
    torch.manual_seed(0)
    model = Planted()
    with torch.no_grad():
        model.conv.weight[5].mul_(1e-4)
        model.conv.bias[5].zero_()
        model.bn.weight[5] = 1e-4
        model.head.weight[:, 5] = 1e-4
    x = torch.randn(4, 3, 8, 8)
    calib = [(x, torch.randint(0, 4, (4, 8, 8)))]
    result = prune_structured(model, x[:1], num_classes=4, ratio=1 / 8, importance=importance, calibration=calib,
                              loss_fn=nn.functional.cross_entropy)
    removed = [idx for name, _, idx in result.history if name == "conv"]
    assert removed == [[5]], result.history
    assert model.conv.out_channels == 7 and model.head.out_channels == 4


def test_errors():
    model = Planted()
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(SlimcvError, match="between 0 and 1"):
        prune_structured(model, x, num_classes=4, ratio=1.5)
    with pytest.raises(SlimcvError, match="calibration"):
        prune_structured(model, x, num_classes=4, ratio=0.25, importance="taylor")
    with pytest.raises(SlimcvError, match="outputs 7 classes"):
        output_layers(model, 7)
    with pytest.raises(SlimcvError, match="Unknown importance"):
        IMPORTANCES.get("l3")


def test_prune_stage_end_to_end(tmp_path):
    import json

    import slimcv
    from slimcv.cli import main

    data = ["--set", "data.options={size: 32, length: 32}", "--set", "data.val_subset=8"]
    assert main(["train", "--model", "unet_small", "--data", "synthetic-shapes", "--epochs", "1", "-b", "8",
                 "--workers", "0", "--set", "model_kwargs={base_width: 8, depth: 2}", *data, "-o", "t"]) == 0
    assert main(["prune", "t", "--remove", "0.3", "--steps", "2", "--finetune-epochs", "1", "-o", "p"]) == 0
    report = json.loads((tmp_path / "p" / "prune.json").read_text())
    assert report["after"]["params"] == pytest.approx(0.7 * report["before"]["params"], rel=0.02)
    assert len(report["steps"]) == 2 and "miou" in report["steps"][0]["metrics"]
    reloaded = slimcv.evaluate("p", {"spec": "synthetic-shapes", "options": {"size": 32, "length": 32},
                                     "val_subset": 8}, quiet=True)
    assert reloaded.metrics["miou"] == pytest.approx(report["after"]["miou"])
