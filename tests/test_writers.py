"""Every writer refuses a folder or file it did not create, and writes through a symlinked folder."""
from __future__ import annotations

import os

import pytest
import torch
from torch.utils.data import TensorDataset

import slimcv
from slimcv.cli import main
from slimcv.errors import SlimcvError
from user_models import UserSegNet

QUIET = {"progress": False, "tensorboard": False}


@pytest.fixture
def blobs():
    torch.manual_seed(0)
    x, y = torch.rand(12, 3, 32, 32), torch.randint(0, 3, (12, 32, 32))
    return TensorDataset(x[:8], y[:8]), TensorDataset(x[8:], y[8:])


def _user_folder(path, name="config.json", text='{"theme": "dark"}'):
    path.mkdir(parents=True)
    (path / name).write_text(text)
    return path


def test_train_and_distill_refuse_an_out_dir_of_the_users(tmp_path, blobs):
    mine = _user_folder(tmp_path / "mine")
    with pytest.raises(SlimcvError, match="did not write"):
        slimcv.train(UserSegNet(3, 8), data=blobs, epochs=1, out_dir=str(mine), **QUIET)
    with pytest.raises(SlimcvError, match="did not write"):
        slimcv.distill(UserSegNet(3, 8), teacher=UserSegNet(3, 8), data=blobs, epochs=1, out_dir=str(mine), **QUIET)
    assert sorted(p.name for p in mine.iterdir()) == ["config.json"]
    assert (mine / "config.json").read_text() == '{"theme": "dark"}'
    first = slimcv.train(UserSegNet(3, 8), data=blobs, epochs=1, out_dir=str(tmp_path / "run"), **QUIET)
    assert first.run_dir.is_dir()  # its own earlier run folder: a fresh run there is told to --resume, not refused


def test_report_refuses_a_folder_of_the_users(tmp_path, blobs):
    run = slimcv.train(UserSegNet(3, 8), data=blobs, epochs=1, out_dir=str(tmp_path / "run"), **QUIET)
    mine = _user_folder(tmp_path / "site", "report.json", '{"visits": 3}')
    with pytest.raises(SlimcvError, match="did not write"):
        slimcv.report([run.run_dir], out=mine, quiet=True, images=0)
    assert sorted(p.name for p in mine.iterdir()) == ["report.json"]


def test_export_refuses_to_replace_an_onnx_file_it_did_not_write(tmp_path, blobs, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"someone else's model")
    with pytest.raises(SlimcvError, match="did not write"):
        slimcv.export(UserSegNet(3, 8), data=blobs)  # the default ./model.onnx
    assert (tmp_path / "model.onnx").read_bytes() == b"someone else's model"
    r = slimcv.export(UserSegNet(3, 8), tmp_path / "mine.onnx", blobs)
    slimcv.export(UserSegNet(3, 8), r.path, blobs)  # its own file: replaced


def test_a_recipe_run_from_its_run_folder_is_not_rewritten(tmp_path, monkeypatch):
    import yaml

    from tests.pipeline.conftest import TINY

    monkeypatch.chdir(tmp_path)
    recipe = {**TINY, "stages": TINY["stages"][:1], "out_dir": "runs/r"}
    (tmp_path / "runs" / "r").mkdir(parents=True)
    path = tmp_path / "runs" / "r" / "recipe.yaml"
    text = "# my notes\n" + yaml.safe_dump(recipe, sort_keys=False)
    path.write_text(text)
    assert main(["run", str(path), "--set", "teacher.epochs=1"]) == 0
    assert path.read_text() == text  # the user's recipe, comments and all


def test_predict_writes_through_a_symlinked_output_folder(tmp_path, blobs):
    from PIL import Image

    r = slimcv.export(UserSegNet(3, 8), tmp_path / "m.onnx", blobs)
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "link")
    assert main(["predict", str(r.path), str(tmp_path / "a.png"), "-o", str(tmp_path / "link")]) == 0
    assert (tmp_path / "link").is_symlink() and (real / "predict.json").is_file()


def test_quantize_writes_through_a_symlinked_output_folder(tmp_path, blobs):
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "link")
    slimcv.quantize(UserSegNet(3, 8), data=blobs, out_dir=tmp_path / "link", nncf=False, latency_runs=1,
                    progress=False)
    assert (tmp_path / "link").is_symlink() and (real / "quantize.json").is_file()
