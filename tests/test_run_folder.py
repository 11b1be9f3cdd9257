"""The run folder has one owner: no other module names its files, and its kinds are told in one place."""
from __future__ import annotations

import ast
from pathlib import Path

from slimcv import run_folder

SRC = Path(__file__).resolve().parents[1] / "src" / "slimcv"
FILE_NAMES = {v for k, v in vars(run_folder).items() if k.isupper() and isinstance(v, str) and "." in v}


def test_no_module_but_run_folder_names_a_run_folder_file():
    assert {"model.json", "config.json", "prune.json", "quantize.json", "best.safetensors"} <= FILE_NAMES
    found = []
    for path in SRC.rglob("*.py"):
        if path.name == "run_folder.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in FILE_NAMES:
                found.append(f"{path.relative_to(SRC)}:{node.lineno} {node.value}")
    assert not found, found


def test_the_kind_of_a_folder_follows_the_record_its_stage_wrote(tmp_path):
    assert run_folder.kind(tmp_path / "missing") is None
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.json").write_text("{}")
    assert run_folder.kind(tmp_path / "user") is None
    for name, expected in ((run_folder.MODEL_JSON, "model"), (run_folder.PRUNE_JSON, "prune"),
                           (run_folder.COMPRESS_JSON, "compress"), (run_folder.QUANTIZE_JSON, "quantize")):
        (tmp_path / "run").mkdir(exist_ok=True)
        (tmp_path / "run" / name).write_text("{}")
        assert run_folder.kind(tmp_path / "run") == expected  # the later stage's record wins
    (tmp_path / "m.onnx").write_bytes(b"")
    assert run_folder.kind(tmp_path / "m.onnx") == "onnx"
