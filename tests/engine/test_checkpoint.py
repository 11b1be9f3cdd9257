import json
import pickle

import pytest
import torch

from slimcv._io import atomic_write_text
from slimcv.engine.checkpoint import last_checkpoint, load_state, save_checkpoint
from slimcv.artifact import load_run_model
from slimcv.errors import SlimcvError
from slimcv.models import create_model, load_weights


def _state(step: int) -> dict:
    return {"optimizer": {"state": {}, "param_groups": []}, "step": torch.tensor(step)}


def test_checkpoint_round_trip_and_pointer(tmp_path):
    model = create_model("unet_small", 3, base_width=4, depth=2)
    save_checkpoint(tmp_path, 1, model, _state(1))
    save_checkpoint(tmp_path, 2, model, _state(2))
    save_checkpoint(tmp_path, 3, model, _state(3), keep=2)
    last = last_checkpoint(tmp_path)
    assert last.name == "epoch_0003"
    assert load_state(last)["epoch"] == 3
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_0002", "epoch_0003"]


def test_crash_while_writing_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = create_model("unet_small", 3, base_width=4, depth=2)
    save_checkpoint(tmp_path, 1, model, _state(1))
    real_save = torch.save

    def crash(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        with open(f, "r+b") as fh:  # leave a half-written file behind, then die
            fh.truncate(10)
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, model, _state(2))
    monkeypatch.undo()
    last = last_checkpoint(tmp_path)
    assert last.name == "epoch_0001"
    assert load_state(last)["epoch"] == 1
    load_weights(create_model("unet_small", 3, base_width=4, depth=2), last / "model.safetensors")
    assert not list((tmp_path / "checkpoints").glob(".epoch_*"))


def test_atomic_write_crash_leaves_old_file(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    atomic_write_text(target, "old")
    import os

    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


class _Payload:
    def __reduce__(self):
        return (print, ("PAYLOAD-RAN",))


def test_state_with_pickled_code_is_refused(tmp_path, capsys):
    ckpt = tmp_path / "checkpoints" / "epoch_0001"
    ckpt.mkdir(parents=True)
    with open(ckpt / "state.pt", "wb") as f:
        pickle.dump({"epoch": 1, "evil": _Payload()}, f)
    with pytest.raises(SlimcvError, match="could run code"):
        load_state(ckpt)
    assert "PAYLOAD-RAN" not in capsys.readouterr().out


def test_truncated_weights_and_other_architecture(tmp_path):
    model = create_model("unet_small", 3, base_width=4, depth=2)
    save_checkpoint(tmp_path, 1, model, _state(1))
    (tmp_path / "model.json").write_text(json.dumps({"name": "unet_small", "num_classes": 3,
                                                     "kwargs": {"base_width": 8, "depth": 2}}))
    with pytest.raises(SlimcvError, match="do not fit this model"):
        load_run_model(tmp_path, which="last")
    weights = last_checkpoint(tmp_path) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(SlimcvError, match="truncated"):
        load_weights(model, weights)
