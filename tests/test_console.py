"""Progress on a log file: long steps print plain lines when stderr is not a terminal."""
import slimcv
from slimcv import _console


def test_a_run_logged_to_a_file_prints_progress_lines(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(_console, "LINE_EVERY_S", 0.0)
    slimcv.train({"model": "unet", "model_kwargs": {"base_width": 4, "depth": 2},
                  "data": {"spec": "synthetic-shapes", "options": {"length": 8}, "size": 32, "batch_size": 4,
                           "workers": 0, "val_subset": 4},
                  "epochs": 1, "progress": True, "tensorboard": False, "out_dir": str(tmp_path / "run")})
    err = capsys.readouterr().err
    assert "epoch 1/1: 4/8 (50%)" in err and "s left" in err


def test_no_progress_lines_when_progress_is_off(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(_console, "LINE_EVERY_S", 0.0)
    with _console.progress_bar("work", 3, enabled=False) as bar:
        assert bar is None
    with _console.progress_bar("work", 3) as bar:
        bar(1, {})
        bar(2, {"loss": 0.5})
    err = capsys.readouterr().err
    assert "work: 1/3 (33%)" in err and "work: 3/3 (100%)" in err and "loss 0.5" in err
