"""Bad input walks: every case exits 2 with one sentence naming the problem, no traceback, nothing deleted."""
from __future__ import annotations

import numpy as np
import pytest

from slimcv import deploy
from slimcv.cli import main
from slimcv.errors import SlimcvError

TINY = ["--model", "unet", "--set", "model_kwargs.base_width=2", "--set", "model_kwargs.depth=2", "--data",
        "synthetic-shapes", "--set", "data.options={size: 32, length: 16}", "--workers", "0", "-b", "8",
        "--set", "progress=false", "--set", "tensorboard=false"]


def _one_sentence_exit_2(argv, capsys, *needles):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and err.startswith("slimcv: error: ") and err.count("\n") == 1, err
    for n in needles:
        assert n in err, err
    return err


@pytest.fixture
def run_folder(tmp_path):
    assert main(["train", *TINY, "--epochs", "1", "-o", str(tmp_path / "run")]) == 0
    return tmp_path / "run"


def test_bad_flags(tmp_path, capsys):
    _one_sentence_exit_2(["train", *TINY, "--size", "0", "0", "-o", str(tmp_path / "a")], capsys, "--size 0 0")
    _one_sentence_exit_2(["distill", *TINY, "--teacher", "unet", "--loss", "kd:abc", "-o", str(tmp_path / "b")],
                         capsys, "kd:abc", "number")
    _one_sentence_exit_2(["train", *TINY, "--resume", "-o", str(tmp_path / "fresh")], capsys, "no checkpoint")
    assert not any((tmp_path / d).exists() for d in ("a", "b", "fresh"))  # refused before any folder is made


@pytest.mark.parametrize("command", ["eval", "prune", "quantize", "export"])
def test_a_model_folder_that_does_not_exist_is_named(tmp_path, capsys, command):
    _one_sentence_exit_2([command, str(tmp_path / "missing_run")], capsys, "missing_run", "does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no default output folder made either


@pytest.mark.parametrize("damaged", ["model.json", "config.json"])
def test_a_damaged_json_file_in_a_model_folder_is_named(run_folder, capsys, damaged):
    (run_folder / damaged).write_text("{not json")
    err = _one_sentence_exit_2(["eval", str(run_folder)], capsys, damaged, "damaged")
    assert str(run_folder / damaged) in err and (run_folder / damaged).read_text() == "{not json"  # left as it was


def test_an_unwritable_output_folder(tmp_path, capsys):
    (tmp_path / "a_file").write_text("the user's")
    _one_sentence_exit_2(["train", *TINY, "--epochs", "1", "-o", str(tmp_path / "a_file" / "run")], capsys,
                         "a_file", "cannot use")
    assert (tmp_path / "a_file").read_text() == "the user's"


def test_a_nan_loss_is_one_sentence(tmp_path, capsys):
    err = _one_sentence_exit_2(["train", *TINY, "--epochs", "2", "--lr", "1e38", "--opt", "sgd", "-o",
                                str(tmp_path / "nan")], capsys, "loss became")
    assert "learning rate" in err


def test_deploy_refuses_a_file_that_is_not_onnx(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx model")
    (tmp_path / "model.onnx.json").write_text('{"task": "classification", "mean": [0, 0, 0], "std": [1, 1, 1]}')
    with pytest.raises(SlimcvError, match="not an ONNX model"):
        deploy.load(bad)


def test_predictor_inputs(tmp_path):
    import torch

    from slimcv.export import export
    from slimcv.models import create_model

    torch.manual_seed(0)
    path = tmp_path / "m.onnx"
    export(create_model("unet", 3, base_width=2, depth=2), path, "synthetic-shapes", check=False)
    p = deploy.load(path)
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    as_float = u8.astype(np.float32) / 255
    assert (p(u8).mask == p(as_float).mask).all()  # float [0, 1] is the same image, not a black one
    with pytest.raises(SlimcvError, match=r"\[0, 1\]"):
        p(as_float * 255)
    with pytest.raises(SlimcvError, match="empty"):
        p(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(SlimcvError, match="uint8"):
        p(u8.astype(np.int64))


def test_an_empty_class_folder_is_named_and_refused(tmp_path, capsys):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / "tree" / cls).mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / "tree" / "cat" / f"{i}.png")
    err = _one_sentence_exit_2(["check-data", f"imagefolder:{tmp_path / 'tree'}"], capsys, "holds no images")
    assert str(tmp_path / "tree" / "dog") in err and "Class 1" not in err  # named by its folder, not its index


def test_train_into_a_folder_another_process_is_writing_is_refused(tmp_path, capsys):
    import json
    import os
    import socket

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / ".lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    _one_sentence_exit_2(["train", *TINY, "--epochs", "1", "-o", str(busy)], capsys, "Another slimcv run")
    assert not (busy / "config.json").exists()


@pytest.mark.parametrize("argv,needle", [
    (["train", "--config", "missing.yaml"], "missing.yaml"),
    (["distill", *TINY, "--teacher", "missing/teacher", "-o", "s"], "missing/teacher"),
    (["prune", "missing/run"], "missing/run"),
    (["quantize", "missing/run"], "missing/run"),
    (["quantize", "missing.onnx", "--data", "synthetic-shapes"], "missing.onnx"),
    (["export", "missing/run"], "missing/run"),
    (["eval", "missing/run"], "missing/run"),
    (["eval", "missing.onnx", "--data", "synthetic-shapes"], "missing.onnx"),
    (["bench", "missing.onnx"], "missing.onnx"),
    (["report", "missing/run"], "missing/run"),
    (["run", "missing.yaml"], "missing.yaml"),
    (["compress", "--model", "missing/run", "--target-speedup", "2"], "missing/run"),
    (["check-data", "camvid:missing/camvid"], "missing/camvid"),
    (["demo", "--data", "camvid:missing/camvid", "--quick"], "missing/camvid"),
    (["predict", "missing.onnx", "x.png", "-o", "out"], "missing.onnx"),
    (["serve", "missing.onnx"], "missing.onnx"),
])
def test_every_command_names_a_path_that_does_not_exist(tmp_path, capsys, argv, needle):
    _one_sentence_exit_2(argv, capsys, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written for a command that could not start


def test_a_model_with_another_class_count_than_the_data_is_one_sentence():
    import slimcv
    from slimcv.models import create_model

    data = {"spec": "synthetic-shapes:classification", "options": {"size": 32, "length": 8}, "workers": 0}
    with pytest.raises(SlimcvError, match="predicts 10 classes but the data has 3"):
        slimcv.quantize(create_model("resnet20", 10), data=data, out_dir="q")
