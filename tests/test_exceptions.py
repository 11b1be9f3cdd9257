"""Failures that are not slimcv's still end in one sentence that names their real cause."""
from __future__ import annotations

import errno
import socket

import pytest
import torch
from torch.utils.data import TensorDataset

import slimcv
from slimcv.cli import main
from slimcv.errors import SlimcvError
from slimcv.models import create_model


def test_a_full_disk_is_one_sentence_naming_the_path(tmp_path, monkeypatch, capsys):
    import slimcv.export.onnx as exp

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "m.onnx"))

    monkeypatch.setattr(exp.torch.onnx, "export", full)
    assert main(["export", "--model", "resnet8", "--num-classes", "3", "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "m.onnx" in err and "no space left on device" in err and "opset" not in err and "Traceback" not in err


def test_a_user_factorys_own_errors_are_reported_as_theirs(tmp_path, monkeypatch):
    (tmp_path / "broken_syntax.py").write_text("def net(:\n    pass\n")
    (tmp_path / "raising.py").write_text("import torch\n\ndef net(num_classes=3):\n"
                                        "    raise TypeError('my own bug in the constructor')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SlimcvError, match=r"broken_syntax.*SyntaxError.*line 1.*fix it there"):
        create_model("broken_syntax:net", 3)
    with pytest.raises(SlimcvError, match=r"raised TypeError in its own code: my own bug") as e:
        create_model("raising:net", 3)
    assert "model_kwargs" not in str(e.value)  # not blamed on the arguments slimcv passed
    with pytest.raises(SlimcvError, match="does not fit its signature"):
        create_model("raising:net", 3, depth=4)


def test_a_checkpoint_without_the_expected_keys_is_named(tmp_path):
    data = (TensorDataset(torch.rand(8, 3, 32, 32), torch.arange(8) % 3),
            TensorDataset(torch.rand(4, 3, 32, 32), torch.arange(4) % 3))
    slimcv.train("resnet8", data=data, epochs=1, out_dir=str(tmp_path / "r"), progress=False, tensorboard=False)
    state = next((tmp_path / "r" / "checkpoints").iterdir()) / "state.pt"
    torch.save({"epoch": 0}, state)
    with pytest.raises(SlimcvError, match=r"lacks optimizer, scheduler, rng"):
        slimcv.train("resnet8", data=data, epochs=2, out_dir=str(tmp_path / "r"), resume=True, progress=False,
                     tensorboard=False)


def test_serve_on_a_port_in_use_says_so_before_starting(tmp_path, capsys):
    from tests.deploy.models import SEG, exported

    path, _ = exported(tmp_path, SEG, "unet")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(path), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err and "choose another --port" in err
