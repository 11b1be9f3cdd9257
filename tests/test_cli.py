import pytest

from slimcv.cli import EXAMPLES, main


@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_every_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and f"slimcv {command}" in out


def test_user_error_is_one_sentence_and_exit_2(capsys):
    rc = main(["train", "--model", "unet_smal", "--data", "synthetic-shapes", "--epochs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("slimcv: error:")
    assert "unet_small" in err[0] and "Traceback" not in err[0]


def test_bad_yaml_names_the_line(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("model: unet\ndata: [oops\n")
    assert main(["train", "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "not valid YAML at line" in capsys.readouterr().err


def test_unknown_config_key_is_named(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("model: unet\nepochz: 3\n")
    assert main(["train", "--config", str(tmp_path / "c.yaml")]) == 2
    assert "unknown key 'epochz'" in capsys.readouterr().err


def test_train_then_eval_a_run_folder(tmp_path, capsys):
    rc = main(["train", "--model", "unet_small", "--data", "synthetic-shapes", "--epochs", "1", "-b", "8",
               "--workers", "0", "--set", "data.options={size: 32, length: 32}", "--set", "data.val_subset=16",
               "--set", "model_kwargs.base_width=4", "--set", "model_kwargs.depth=2", "--out-dir", "run"])
    assert rc == 0
    out_json = tmp_path / "m.json"
    assert main(["eval", "run", "--out", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "circle" in text and "mean" in text
    import json

    saved = json.loads(out_json.read_text())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["metrics"]["miou"] == pytest.approx(summary["best"]["value"])


def test_models_lists_registry(capsys):
    assert main(["models", "--task", "segmentation"]) == 0
    out = capsys.readouterr().out
    assert "lraspp_mobilenet_v3_large" in out and "resnet20" not in out


def test_eval_without_data_needs_a_run_folder(capsys):
    assert main(["eval", "resnet20"]) == 2
    assert "Give --data SPEC" in capsys.readouterr().err


def test_version_names_slimcv_and_its_runtimes(capsys):
    import onnxruntime

    import slimcv

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    out = capsys.readouterr().out.strip()
    assert e.value.code == 0 and len(out.splitlines()) == 1
    assert out.startswith(f"slimcv {slimcv.__version__}") and f"onnxruntime {onnxruntime.__version__}" in out


def test_help_and_the_parser_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from slimcv.cli import _parser; _parser().parse_args(['bench', 'x']); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_a_table_column_has_one_number_format(capsys):
    from slimcv._console import print_table

    print_table("t", ["model", "GMACs"], [("a", 0.0100), ("b", 0.0094), ("c", 1.5)])
    out = capsys.readouterr().out
    assert "0.0100" in out and "0.0094" in out and "1.5000" in out and "e-0" not in out
