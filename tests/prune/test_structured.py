import pytest
import torch
from torch import nn

from slimcv.artifact import load_run_model
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


@pytest.mark.parametrize("importance", ["l1", "l2", "bn_scale", "taylor", "activation", "apoz"])
def test_each_importance_prunes_a_planted_dead_channel_first(importance):
    torch.manual_seed(0)
    model = Planted()
    with torch.no_grad():
        model.conv.weight[5].mul_(1e-4)
        model.conv.bias[5].zero_()
        model.bn.weight[5] = 1e-4
        model.bn.bias[5] = -1.0  # a dead ReLU: never positive (what APoZ looks for)
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
    for importance in ("taylor", "activation"):
        with pytest.raises(SlimcvError, match="calibration"):
            prune_structured(model, x, num_classes=4, ratio=0.25, importance=importance)
    with pytest.raises(SlimcvError, match="empty calibration"):
        prune_structured(model, x, num_classes=4, ratio=0.25, importance="apoz", calibration=[])
    with pytest.raises(SlimcvError, match="No layer named 'bnn'.*'bn'"):
        prune_structured(model, x, num_classes=4, ratio=0.25, ignored=["bnn"])
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


class HardCoded(nn.Module):
    """A head that reshapes with a literal channel count: DepGraph cannot see it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = Flatten8()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)))


class Flatten8(nn.Module):
    def forward(self, x):
        return x.reshape(x.shape[0], 8, -1).mean(-1)


def test_unsupported_layer_is_named_and_can_be_ignored():
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(SlimcvError, match="inside layer 'fc'.*'conv', 'pool'.*ignore="):
        prune_structured(HardCoded(), x, num_classes=4, ratio=0.25)
    model = HardCoded()
    prune_structured(model, x, num_classes=4, ratio=0.25, ignored=["conv"])
    assert model.conv.out_channels == 8 and model(x).shape == (1, 4)


def test_per_layer_ratios_prune_only_named_layers():
    torch.manual_seed(0)
    model = create_model("unet_small", 3, base_width=8, depth=2).eval()
    x = torch.randn(1, 3, 32, 32)
    convs = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    first = next(iter(convs))
    prune_structured(model, x, num_classes=3, ratio=0.0, ratio_dict={first: 0.5})
    after = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert after[first] == convs[first] // 2
    assert sum(a != b for a, b in zip(after.values(), convs.values())) == 1


def test_soft_and_sensitivity_stages_with_kd_and_latency(tmp_path):
    import json

    from slimcv.cli import main

    data = ["--set", "data.options={size: 32, length: 32}", "--set", "data.val_subset=8"]
    assert main(["train", "--model", "unet_small", "--data", "synthetic-shapes", "--epochs", "1", "-b", "8",
                 "--workers", "0", "--set", "model_kwargs={base_width: 8, depth: 2}", *data, "-o", "t"]) == 0
    assert main(["prune", "t", "--remove", "0.4", "--target", "macs", "--method", "soft", "--finetune-epochs", "2",
                 "--distill", "kd:1", "-T", "2", "--latency-runs", "5", "-o", "soft"]) == 0
    report = json.loads((tmp_path / "soft" / "prune.json").read_text())
    assert report["after"]["macs"] == pytest.approx(0.6 * report["before"]["macs"], rel=0.06)  # 8-wide layers: coarse steps
    assert report["after"]["latency_ms"] > 0 and report["before"]["latency_ms"] > 0
    assert report["config"]["distill"][0]["name"] == "kd"
    step = report["steps"][0]
    assert step["zeroed_filters"] > 0 and "miou" in step["metrics_before_removal"]
    summary = json.loads((tmp_path / "soft" / "summary.json").read_text())
    assert summary["metrics"]["miou"] == pytest.approx(report["after"]["miou"])
    assert (tmp_path / "soft" / "config.json").is_file()

    for importance in ("taylor", "apoz"):  # the stage feeds them training batches (and a loss for taylor)
        assert main(["prune", "t", "--remove", "0.3", "--importance", importance, "--latency-runs", "0",
                     "--steps", "2", "--finetune-epochs", "1", "-o", importance]) == 0
        r = json.loads((tmp_path / importance / "prune.json").read_text())
        assert r["after"]["params"] < 0.8 * r["before"]["params"]
        # every intermediate step folder reloads as the pruned architecture it holds
        for step in r["steps"]:
            reloaded, _ = load_run_model(tmp_path / importance / f"step_{step['step']}")
            assert sum(p.numel() for p in reloaded.parameters()) == step["params"]

    assert main(["prune", "t", "--sensitivity", "0.5", "--max-drop", "100", "--latency-runs", "0",
                 "-o", "sens"]) == 0
    report = json.loads((tmp_path / "sens" / "prune.json").read_text())
    sens = json.loads((tmp_path / "sens" / "sensitivity.json").read_text())
    assert set(report["steps"][0]["layer_ratios"]) == set(sens["curves"])  # every layer allowed 0.5 by drop 100
    assert report["after"]["params"] < report["before"]["params"]
    assert (tmp_path / "sens" / "sensitivity.png").stat().st_size > 1000


def test_narrow_layers_keep_their_channels_until_the_ratio_asks_for_one():
    # Torch-Pruning alone keeps int(n * (1 - r)): at r = 0.05 every 4-channel layer would lose a quarter
    torch.manual_seed(0)
    model = create_model("unet", 3, base_width=4, depth=3).eval()
    x = torch.randn(1, 3, 32, 32)
    prune_structured(model, x, num_classes=3, ratio=0.05)
    widths = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert widths["encoders.0.0"] == 4 and widths["encoders.1.0"] == 8  # round(4*0.95) = 4, round(8*0.95) = 8
    assert widths["encoders.3.0"] == 30  # round(32*0.95) = 30
    prune_structured(model, x, num_classes=3, ratio=0.5)
    assert {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}["encoders.0.0"] == 2
    # min_channels: a floor for every layer; layers already at or below it stay whole
    model = create_model("unet", 3, base_width=4, depth=3).eval()
    prune_structured(model, x, num_classes=3, ratio=0.5, min_channels=6)
    widths = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert widths["encoders.0.0"] == 4 and widths["encoders.1.0"] == 6 and widths["encoders.3.0"] == 16
    # the up-convolutions (ConvTranspose2d) follow the same rule: the one feeding the 4-wide level stays whole
    ups = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.ConvTranspose2d)}
    assert ups["ups.2"] == 4, ups


def test_fine_tuning_keeps_the_class_weights_the_source_run_was_trained_with(tmp_path):
    import json

    from slimcv.config import PruneConfig
    from slimcv.prune.prune import _source_class_weights

    (tmp_path / "config.json").write_text(json.dumps({"class_weights": "median_frequency"}))
    assert _source_class_weights(PruneConfig(source=str(tmp_path)), tmp_path) == "median_frequency"
    assert _source_class_weights(PruneConfig(source=str(tmp_path), class_weights=None), tmp_path) is None
    assert _source_class_weights(PruneConfig(source=str(tmp_path), class_weights=[1.0, 2.0]), tmp_path) == (1.0, 2.0)
    (tmp_path / "config.json").write_text(json.dumps({"class_weights": None}))
    assert _source_class_weights(PruneConfig(source=str(tmp_path)), tmp_path) is None


def test_round_to_keeps_channel_counts_at_multiples():
    import torch
    from torch.nn.modules.conv import _ConvNd

    from slimcv.models import create_model
    from slimcv.prune.structured import prune_structured

    torch.manual_seed(0)
    net = create_model("unet", 5, base_width=12, depth=2)
    widths = {n: m.out_channels for n, m in net.named_modules() if isinstance(m, _ConvNd)}
    prune_structured(net, torch.randn(1, 3, 32, 32), ratio=0.4, num_classes=5, round_to=8)
    after = {n: m.out_channels for n, m in net.named_modules() if isinstance(m, _ConvNd)}
    assert after["head"] == 5
    changed = [n for n in after if after[n] != widths[n]]
    assert changed  # something was pruned
    for n in changed:
        assert after[n] % 8 == 0, (n, widths[n], after[n])
    assert all(after[n] == widths[n] for n in after if widths[n] <= 8)


def test_shufflenet_is_refused_naming_its_channel_shuffle():
    """Torch-Pruning's dependency graph cannot follow ShuffleNetV2's 5-D channel shuffle (its tracing fails)."""
    from slimcv.models import create_model

    net = create_model("shufflenet_v2_x1_0", 10).eval()
    with pytest.raises(SlimcvError, match=r"ShuffleNetV2's channel shuffle .*stage2\.0 \.\.\. stage4\.\d+") as e:
        prune_structured(net, torch.randn(1, 3, 64, 64), num_classes=10, ratio=0.3)
    assert "\n" not in str(e.value)
