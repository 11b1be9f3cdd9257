"""The runner: manifests, skipping, invalidation, resume after a kill (at a boundary and inside a stage)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from slimcv.cli import main
from slimcv.errors import SlimcvError
from slimcv.pipeline import run

SRC = Path(__file__).resolve().parents[2] / "src"


def _manifest(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / stage / "manifest.json").read_text())


def _statuses(result) -> dict:
    return {r.name: r.status for r in result.stages}


def test_tiny_chain_end_to_end_writes_manifests(tiny):
    tiny["stages"].append({"name": "ft", "type": "finetune", "input": "prune", "teacher": "teacher", "epochs": 1,
                           "progress": False, "tensorboard": False})
    result = run(tiny)
    assert _statuses(result) == {"teacher": "ran", "distill": "ran", "prune": "ran", "ft": "ran"}
    root = Path("runs/tiny")
    assert (root / "recipe.yaml").is_file()
    for name in ("teacher", "distill", "prune", "ft"):
        m = _manifest(root, name)
        assert m["status"] == "done" and m["wall_time_s"] > 0 and len(m["digest"]) == 64
        assert m["outputs"] and all(len(h) == 64 for h in m["outputs"].values())
        assert "out_dir" not in m["params"] and "progress" not in m["params"]
    assert _manifest(root, "distill")["inputs"] == {"teacher:teacher": _manifest(root, "teacher")["digest"]}
    assert _manifest(root, "distill")["params"]["teacher"] == "@teacher"
    assert _manifest(root, "ft")["inputs"]["input:prune"] == _manifest(root, "prune")["digest"]
    prune = result["prune"].metrics
    assert prune["params"] < result["distill"].metrics["params"] and 0.1 < prune["params_removed"] < 0.4
    assert 0 <= result["ft"].metrics["miou"] <= 100
    # the fine-tuned pruned model reloads with its pruned architecture
    from slimcv.artifact import load_run_model

    model, spec = load_run_model(root / "ft")
    assert sum(p.numel() for p in model.parameters()) == prune["params"] and spec["pruning_history"]


def test_rerun_skips_finished_stages_and_changes_invalidate_downstream_only(tiny):
    first_removed = run(tiny)["prune"].metrics["params_removed"]
    root = Path("runs/tiny")
    stamp = {n: (root / n / "manifest.json").stat().st_mtime_ns for n in ("teacher", "distill", "prune")}
    again = run(tiny, ["teacher.progress=true"])  # a display setting is not a change
    assert set(_statuses(again).values()) == {"skipped"}
    assert stamp == {n: (root / n / "manifest.json").stat().st_mtime_ns for n in stamp}
    assert again["distill"].metrics == _manifest(root, "distill")["metrics"]

    changed = run(tiny, ["prune.remove=0.5"])
    assert _statuses(changed) == {"teacher": "skipped", "distill": "skipped", "prune": "ran"}
    assert changed["prune"].metrics["params_removed"] > first_removed

    changed = run(tiny, ["prune.remove=0.5", "distill.alpha=0.5"])
    assert _statuses(changed) == {"teacher": "skipped", "distill": "ran", "prune": "ran"}
    assert _manifest(root, "distill")["params"]["alpha"] == 0.5


def test_damaged_output_reruns_that_stage(tiny):
    run(tiny)
    before = _manifest(Path("runs/tiny"), "distill")["digest"]
    (Path("runs/tiny/distill/best.safetensors")).write_bytes(b"garbage")
    statuses = _statuses(run(tiny))
    assert statuses["teacher"] == "skipped" and statuses["distill"] == "ran"
    # downstream stages depend on content: identical bytes again (CPU training is repeatable) keep them
    same = _manifest(Path("runs/tiny"), "distill")["digest"] == before
    assert statuses["prune"] == ("skipped" if same else "ran")


def test_until_stops_at_a_stage_boundary_and_the_next_run_continues(tiny):
    first = run(tiny, until="teacher")
    assert _statuses(first) == {"teacher": "ran"} and not Path("runs/tiny/distill").exists()
    assert _statuses(run(tiny)) == {"teacher": "skipped", "distill": "ran", "prune": "ran"}


KILLER = """
import os, signal, sys
import slimcv.engine.train as T
import slimcv.pipeline.runner as R
where, stage = sys.argv[1], sys.argv[2]
if where == "checkpoint":  # die right after the stage's 2nd checkpoint is on disk
    real = T.save_checkpoint
    def save(run_dir, epoch, *a, **k):
        out = real(run_dir, epoch, *a, **k)
        if epoch == 2 and str(run_dir).endswith(stage):
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    T.save_checkpoint = save
else:  # die right after the stage's 'done' manifest is written
    real = R.write_manifest
    def write(folder, manifest):
        out = real(folder, manifest)
        if manifest["status"] == "done" and manifest["stage"] == stage:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    R.write_manifest = write
from slimcv.cli import main
main(["run", sys.argv[3]])
"""


def _killed_run(where: str, stage: str, recipe: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", KILLER, where, stage, str(recipe)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]


@pytest.mark.parametrize("where,stage", [("checkpoint", "teacher"), ("checkpoint", "distill"),
                                         ("checkpoint", "step_1"), ("boundary", "teacher")])
def test_a_killed_run_finishes_on_rerun_with_nothing_lost(tmp_path, tiny, where, stage):
    tiny["stages"][0]["epochs"] = 3
    tiny["stages"][1]["epochs"] = 3
    tiny["stages"][2]["finetune_epochs"] = 3
    reference = run(tiny, out_dir=tmp_path / "reference")
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**tiny, "out_dir": str(tmp_path / "killed")}))
    _killed_run(where, stage, path)
    root = tmp_path / "killed"
    interrupted = {"teacher": "teacher", "distill": "distill", "step_1": "prune"}[stage]
    if where == "checkpoint":
        assert _manifest(root, interrupted)["status"] == "running"
    else:
        assert _manifest(root, "teacher")["status"] == "done" and not (root / "distill").exists()
    resumed = run(path)
    expected = {"teacher": "skipped", "distill": "ran", "prune": "ran"}
    if where == "checkpoint":
        order = ["teacher", "distill", "prune"]
        expected = {n: ("skipped" if order.index(n) < order.index(interrupted) else
                        "resumed" if n == interrupted else "ran") for n in order}
    assert _statuses(resumed) == expected
    for name in ("teacher", "distill", "prune"):  # the same weights, byte for byte, as the uninterrupted run
        weights = {k: v for k, v in _manifest(root, name)["outputs"].items() if k.endswith(".safetensors")}
        assert weights and weights == {k: v for k, v in _manifest(tmp_path / "reference", name)["outputs"].items()
                                       if k.endswith(".safetensors")}, name
    if interrupted in ("teacher", "distill"):
        lines = (root / interrupted / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert reference["prune"].metrics == resumed["prune"].metrics


def test_cli_run_with_overrides_until_and_dry_run(tiny_yaml, capsys):
    fresh = run(tiny_yaml, dry_run=True)  # nothing has run yet: every stage would run, nothing is written
    assert set(_statuses(fresh).values()) == {"would run"} and not Path("runs").exists()
    assert main(["run", str(tiny_yaml), "--set", "distill.epochs=2", "--until", "distill"]) == 0
    assert _manifest(Path("runs/tiny"), "distill")["params"]["epochs"] == 2
    assert main(["run", str(tiny_yaml), "--set", "distill.epochs=2", "--dry-run"]) == 0
    assert "plan for runs/tiny" in capsys.readouterr().out and not Path("runs/tiny/prune").exists()
    plan = run(tiny_yaml, ["distill.epochs=2", "prune.remove=0.2"], dry_run=True)
    assert _statuses(plan) == {"teacher": "would skip", "distill": "would skip", "prune": "would run"}
    plan = run(tiny_yaml, ["distill.epochs=3"], dry_run=True)
    assert _statuses(plan) == {"teacher": "would skip", "distill": "would run", "prune": "would run"}
    assert main(["run", str(tiny_yaml), "--set", "distil.epochs=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'distill'" in err[0]


def test_preflight_catches_a_missing_dataset_before_training(tiny, tmp_path):
    tiny["data"] = {"spec": f"camvid:{tmp_path / 'nowhere'}"}
    with pytest.raises(SlimcvError):
        run(tiny)
    assert not Path("runs/tiny/teacher").exists()


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_holds_it(tmp_path):
    from slimcv.pipeline.runner import run_lock

    with run_lock(tmp_path):
        with pytest.raises(SlimcvError, match="Another slimcv run .* is writing"):
            with run_lock(tmp_path):
                pass
    assert not (tmp_path / ".lock").exists()  # released at the end
    # a lock left by a process that no longer exists is taken over, not a dead end
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (tmp_path / ".lock").write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    with run_lock(tmp_path):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


def test_a_folder_named_like_a_stage_that_slimcv_did_not_write_is_refused_not_deleted(tiny, tiny_yaml, capsys):
    user = Path("runs/tiny/teacher")
    user.mkdir(parents=True)
    (user / "my_weights.pth").write_bytes(b"precious")
    (user / "manifest.json").write_text('{"name": "my web app"}')  # a manifest of the user's, not slimcv's
    assert main(["run", str(tiny_yaml), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "runs/tiny/teacher" in err and "no manifest.json" in err and "Traceback" not in err
    with pytest.raises(SlimcvError, match="did not write"):
        run(tiny)
    assert (user / "my_weights.pth").read_bytes() == b"precious"
    assert sorted(p.name for p in user.iterdir()) == ["manifest.json", "my_weights.pth"]


def test_dry_run_names_the_user_code_a_recipe_will_import(tiny, capsys):
    tiny["models"]["student"] = {"model": "user_models:UserSegNet", "model_kwargs": {"width": 4}}
    run(tiny, dry_run=True)
    captured = capsys.readouterr()
    assert "will import your code: user_models:UserSegNet" in captured.out + captured.err


def test_dry_run_reports_every_problem_it_can_find_without_training(tiny, tmp_path):
    (tmp_path / "a_file").write_text("x")
    tiny["data"] = {"spec": f"camvid:{tmp_path / 'nowhere'}"}
    with pytest.raises(SlimcvError) as e:
        run(tiny, out_dir=tmp_path / "a_file" / "run", dry_run=True)
    msg = str(e.value)
    assert "a_file is a file" in msg and "nowhere" in msg and "\n" not in msg
    assert (tmp_path / "a_file").read_text() == "x"


def test_the_run_summary_says_whether_distillation_beat_the_student_trained_alone(tmp_path, tiny, capsys):
    from slimcv.report.collect import collect

    tiny["stages"] = [tiny["stages"][0],
                      {"name": "alone", "type": "train", "model": "student", "epochs": 1, "progress": False,
                       "tensorboard": False},
                      tiny["stages"][1]]
    result = run(tiny, out_dir=tmp_path / "r")
    out = capsys.readouterr().out
    entries = {e.name: e for e in collect([tmp_path / "r" / "alone", tmp_path / "r" / "distill"], count=False)}
    gain = entries["distill"].metric - entries["alone"].metric
    said = "Distillation helped" if gain > 0 else "Distillation did not help"
    assert said in " ".join(out.split()), out
    assert f"{gain:+.2f} pt" in " ".join(out.split())
    assert [r.status for r in result.stages] == ["ran", "ran", "ran"]


def test_a_recipe_writing_into_the_filesystem_root_is_refused_even_in_a_dry_run(tiny, capsys):
    tiny["out_dir"] = "/"
    with pytest.raises(SlimcvError, match="filesystem root"):
        run(tiny, dry_run=True)
