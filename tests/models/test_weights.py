"""Weights from local files only: safetensors and state_dict round trips, mismatches, unsafe and broken files."""
from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from slimcv.errors import SlimcvError
from slimcv.models import create_model, load_weights, read_state_dict, save_weights

SMALL = {"base_width": 4, "depth": 2}  # a U-Net small enough to build in milliseconds


def trained_like(model: nn.Module) -> nn.Module:
    """Give BatchNorm buffers non-default values, so a round trip that drops buffers is caught."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.num_batches_tracked.fill_(7)
    return model.eval()


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.eval()(x)


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.fixture
def model() -> nn.Module:
    return trained_like(create_model("unet_small", num_classes=5, **SMALL))


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(1, 3, 32, 48)


def test_safetensors_round_trip_gives_identical_outputs(model, x, tmp_path):
    path = save_weights(model, tmp_path / "w" / "model.safetensors")
    assert path.is_file() and not list(path.parent.glob(".*.tmp"))  # atomic write leaves no temp file
    fresh = create_model("unet_small", num_classes=5, **SMALL)
    assert not torch.equal(outputs(fresh, x), outputs(model, x))  # control: a new model differs
    loaded = create_model("unet_small", num_classes=5, weights=path, **SMALL)
    assert torch.equal(outputs(loaded, x), outputs(model, x))
    assert_same_state(loaded, model)
    assert loaded.state_dict()["encoders.0.1.num_batches_tracked"].item() == 7


def test_weights_path_may_be_a_string(model, x, tmp_path):
    path = save_weights(model, tmp_path / "model.safetensors")
    loaded = create_model("unet_small", num_classes=5, weights=str(path), **SMALL)
    assert torch.equal(outputs(loaded, x), outputs(model, x))


def test_pth_state_dict_loads(model, x, tmp_path):
    path = tmp_path / "model.pth"
    torch.save(model.state_dict(), path)
    loaded = create_model("unet_small", num_classes=5, weights=path, **SMALL)
    assert torch.equal(outputs(loaded, x), outputs(model, x))
    assert_same_state(loaded, model)


@pytest.mark.parametrize("wrap", [
    lambda sd: {"state_dict": sd, "epoch": 3},
    lambda sd: {"model": sd, "optimizer": {"lr": 0.1}},
    lambda sd: {f"module.{k}": v for k, v in sd.items()},  # saved from DistributedDataParallel
], ids=["state_dict-key", "model-key", "ddp-prefix"])
def test_common_checkpoint_wrappings_load(model, x, tmp_path, wrap):
    path = tmp_path / "ckpt.pt"
    torch.save(wrap(model.state_dict()), path)
    loaded = create_model("unet_small", num_classes=5, weights=path, **SMALL)
    assert torch.equal(outputs(loaded, x), outputs(model, x))


def test_classification_model_round_trip(tmp_path):
    model = trained_like(create_model("resnet20", num_classes=7))
    x = torch.randn(2, 3, 32, 32)
    path = save_weights(model, tmp_path / "r20.safetensors")
    loaded = create_model("resnet20", num_classes=7, weights=path)
    assert torch.equal(outputs(loaded, x), outputs(model, x))


def test_width_mismatch_is_reported_with_shapes(tmp_path):
    path = save_weights(create_model("unet", num_classes=5, base_width=8), tmp_path / "w8.safetensors")
    with pytest.raises(SlimcvError) as e:
        create_model("unet", num_classes=5, base_width=16, weights=path)
    msg = str(e.value)
    assert "shape" in msg and "w8.safetensors" in msg
    assert "encoders.0.0.weight: file (8, 3, 3, 3) vs model (16, 3, 3, 3)" in msg


def test_num_classes_mismatch_is_reported(model, tmp_path):
    path = save_weights(model, tmp_path / "c5.safetensors")
    with pytest.raises(SlimcvError) as e:
        create_model("unet_small", num_classes=3, weights=path, **SMALL)
    msg = str(e.value)
    assert "shape" in msg and "head.weight" in msg and "num_classes" in msg


def test_depth_mismatch_lists_missing_and_unexpected_keys(model, tmp_path):
    path = save_weights(model, tmp_path / "d2.safetensors")
    with pytest.raises(SlimcvError) as e:
        create_model("unet_small", num_classes=5, weights=path, base_width=4, depth=3)
    assert "missing key(s)" in str(e.value)
    deeper = save_weights(create_model("unet_small", num_classes=5, base_width=4, depth=3), tmp_path / "d3.safetensors")
    with pytest.raises(SlimcvError, match="unexpected key"):
        create_model("unet_small", num_classes=5, weights=deeper, **SMALL)


def test_non_strict_load_tolerates_extra_keys(model, x, tmp_path):
    state = {**model.state_dict(), "aux.weight": torch.zeros(1)}
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    target = create_model("unet_small", num_classes=5, **SMALL)
    with pytest.raises(SlimcvError, match="unexpected key"):
        load_weights(target, path)
    load_weights(target, path, strict=False)
    assert torch.equal(outputs(target, x), outputs(model, x))


class Payload:
    """Unpickling this calls print('pwned'): harmless stand-in for os.system."""

    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("write", [
    lambda p: torch.save({"weight": torch.zeros(2), "payload": Payload()}, p),
    lambda p: p.write_bytes(pickle.dumps({"payload": Payload()})),  # a bare pickle named .pth
], ids=["torch.save", "raw-pickle"])
def test_pickled_code_is_refused_and_never_runs(tmp_path, capsys, write):
    path = tmp_path / "evil.pth"
    write(path)
    capsys.readouterr()
    with pytest.raises(SlimcvError) as e:
        create_model("unet_small", num_classes=5, weights=path, **SMALL)
    msg = str(e.value)
    assert "Refused to load" in msg and "evil.pth" in msg
    assert "pwned" not in capsys.readouterr().out
    # Control: an unrestricted unpickle of the same payload does print, so the check above can fail.
    pickle.loads(pickle.dumps(Payload()))
    assert "pwned" in capsys.readouterr().out


def test_pth_without_tensors_is_not_a_state_dict(tmp_path):
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(SlimcvError, match="does not hold a state_dict"):
        read_state_dict(path)
    torch.save([torch.zeros(1)], path)
    with pytest.raises(SlimcvError, match="does not hold a state_dict"):
        read_state_dict(path)


def test_truncated_safetensors_is_refused(model, tmp_path):
    path = save_weights(model, tmp_path / "cut.safetensors")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SlimcvError, match=r"cut\.safetensors is truncated"):
        create_model("unet_small", num_classes=5, weights=path, **SMALL)


def test_garbage_safetensors_is_refused(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x00" * 3)
    with pytest.raises(SlimcvError, match=r"junk\.safetensors"):
        read_state_dict(path)


def test_truncated_pth_is_refused(model, tmp_path):
    path = tmp_path / "cut.pth"
    torch.save(model.state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SlimcvError, match=r"cut\.pth is truncated"):
        create_model("unet_small", num_classes=5, weights=path, **SMALL)


@pytest.mark.parametrize("weights", ["DEFAULT", "IMAGENET1K_V1", "https://download.pytorch.org/models/r18.pth"])
def test_hub_weights_are_never_downloaded(weights):
    with pytest.raises(SlimcvError) as e:
        create_model("resnet18", num_classes=5, weights=weights)
    msg = str(e.value)
    assert "never downloads" in msg and repr(weights) in msg
    assert "torch.save" in msg  # says how to get them instead


def test_missing_weights_file(tmp_path):
    with pytest.raises(SlimcvError, match=r"nope\.safetensors does not exist"):
        create_model("unet_small", num_classes=5, weights=tmp_path / "nope.safetensors")
    with pytest.raises(SlimcvError, match=r"model\.pth does not exist"):
        create_model("unet_small", num_classes=5, weights=str(tmp_path / "model.pth"))


def test_read_state_dict_returns_tensors(model, tmp_path):
    path = save_weights(model, tmp_path / "m.safetensors")
    state = read_state_dict(path)
    assert state.keys() == model.state_dict().keys()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
