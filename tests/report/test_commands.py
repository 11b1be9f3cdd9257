"""'Reproduce with': the command line that ran, verbatim, or a rebuilt one that keeps every flag and a new folder."""
from __future__ import annotations

import json
import shlex

from slimcv.cli import main
from slimcv.report.collect import collect


def test_the_command_line_that_ran_is_recorded_and_quoted(tmp_path):
    out = tmp_path / "my run"  # a space: the record must quote it
    argv = ["train", "--model", "unet_small", "--data", "synthetic-shapes", "--epochs", "1", "--size", "32",
            "--set", "data.options.length=16", "--set", "model_kwargs.base_width=4", "--threads", "1",
            "--out-dir", str(out)]
    assert main(argv) == 0
    recorded = (out / "command.txt").read_text().strip()
    assert shlex.split(recorded) == ["slimcv", *argv]
    (entry,) = collect([out], count=False)
    assert entry.command == recorded and entry.command_recorded


def test_rebuilt_commands_keep_the_flags_and_write_elsewhere(runs, tmp_path):
    import shutil

    pruned = tmp_path / "pruned"
    shutil.copytree(runs["pruned"], pruned)
    info = json.loads((pruned / "prune.json").read_text())
    info["config"].update({"distill": [{"name": "kd", "weight": 0.5, "temperature": 1.0}], "alpha": 1.0,
                           "ignore": ["head"], "out_dir": str(pruned)})
    (pruned / "prune.json").write_text(json.dumps(info))
    teacher, entry = collect([runs["teacher"], pruned], count=False)
    assert not entry.command_recorded
    for flag in ("--distill kd:0.5", "-T 1", "--alpha 1", "--ignore head", f"--remove {info['config']['remove']}"):
        assert flag in entry.command, flag
    assert entry.command.endswith(f"-o {pruned}_again")  # never the folder that already holds the run
    assert not teacher.command_recorded and teacher.command.endswith(f"--out-dir {runs['teacher']}_again")
