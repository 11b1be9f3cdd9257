"""Issue 10 chain scripts end to end on tiny overrides (synthetic shapes / a fake CIFAR folder), and compare_results."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import camvid_chain  # noqa: E402
import cifar10_chain  # noqa: E402
from _chain import LABELS, chain_recipe  # noqa: E402
from compare_results import compare  # noqa: E402
from compare_results import main as compare_main  # noqa: E402

FAST = ["teacher.epochs=1", "student.epochs=1", "distill.epochs=1", "prune.steps=1", "prune.finetune_epochs=1",
        "teacher_pruned.steps=1", "teacher_pruned.finetune_epochs=1", "quantize.calibration_images=8",
        "quantize.latency_runs=2", "bench.runs=3", "bench.warmup=1"]
SEG = ["data={spec: synthetic-shapes, options: {size: 32, length: 16}, val_subset: 8, batch_size: 8, workers: 0}",
       "models.teacher.model_kwargs={base_width: 8, depth: 2}", "models.student.model_kwargs={base_width: 2, depth: 2}",
       "report.images=1", "prune.min_channels=1"]  # the recipe's floor of 8 would leave a 2-wide student whole
MODELS = {"teacher", "student_alone", "student_kd", "student_kd_pruned", "student_kd_pruned_int8", "teacher_pruned"}


def _args(overrides):
    return [x for item in overrides for x in ("--set", item)]


def test_camvid_chain_script_runs_every_stage_and_writes_results(capsys):
    # --until trains now and leaves bench/report (and the results file) for a later call on a quiet machine
    assert camvid_chain.main([*_args(FAST + SEG), "--out-dir", "runs/c", "--results", "res.json",
                              "--until", "student"]) == {}
    assert Path("runs/c/student/manifest.json").is_file() and not Path("runs/c/distill").exists()
    assert not Path("res.json").exists()
    results = camvid_chain.main([*_args(FAST + SEG), "--out-dir", "runs/c", "--results", "res.json"])
    assert set(results["models"]) == MODELS
    saved = json.loads(Path("res.json").read_text())
    assert saved["metric"] == "miou" and saved["schema"] == "slimcv.chain/1"
    m = saved["models"]
    assert m["teacher_pruned"]["macs"] < m["teacher"]["macs"]
    assert m["student_kd_pruned"]["params"] < m["student_kd"]["params"]
    assert "ort-int8" in m["student_kd_pruned_int8"]["latency_ms"]
    assert {"eager", "ort-fp32"} <= set(m["teacher"]["latency_ms"])
    assert all(isinstance(v, float) for v in m["student_kd"]["per_class"].values()) and m["student_kd"]["per_class"]
    assert len(saved["targets"]) == 4 and all(t["met"] in (True, False) for t in saved["targets"])
    macs = saved["targets"][0]
    assert macs["value"] == pytest.approx(m["teacher"]["macs"] / m["student_kd_pruned"]["macs"])
    assert "targets (issue 10)" in capsys.readouterr().out
    assert Path("figures/res_pareto.png").stat().st_size > 1000  # the report's plot, copied for the docs
    assert "figures/res_pareto.png" in saved["figures"]
    dep = saved["deployed"]  # chosen from the quiet interleaved bench, the quantize stage's pick kept beside it
    assert "quantize_recommended" in dep and dep["latency_ms"] > 0
    int8 = m["student_kd_pruned_int8"]
    if int8["miou"] >= m["student_kd_pruned"]["miou"] - 0.5:
        assert dep["latency_ms"] <= min(int8["latency_ms"].values())
    table = Path("res.md").read_text()  # the Markdown the docs quote: one row per model, one per target
    assert all(f"| {LABELS[k]} |" in table for k in MODELS) and table.count("| final student") == 3
    assert saved["stages_wall_time_s"] >= sum(v for v in saved["stage_time_s"].values() if v) - 1e-6
    # the same command again skips every stage and compares with the results it replaces
    again = camvid_chain.main([*_args(FAST + SEG), "--out-dir", "runs/c", "--results", "res.json"])
    assert again["models"]["teacher"]["miou"] == m["teacher"]["miou"]
    assert "against the previous res.json" in capsys.readouterr().out


def _fake_cifar(root: Path, classes=("cat", "dog", "ship"), per_class=10) -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / "train" / name).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8) + np.uint8(c * 80)
            Image.fromarray(img).save(root / "train" / name / f"{i:04d}.jpg")
    return root


def test_cifar10_chain_script_with_a_reused_teacher(tmp_path):
    data = _fake_cifar(tmp_path / "cifar")
    cls = [f"data={{spec: 'cifar10:{data}', options: {{val_per_class: 3}}, batch_size: 8, eval_batch_size: 16, "
           "workers: 0}", "models.teacher.model=resnet8", "quantize.calibration_images=8"]
    first = cifar10_chain.main([*_args(FAST + cls), "--out-dir", "runs/a", "--results", "a.json"])
    teacher = Path("runs/a/teacher")
    second = cifar10_chain.main([*_args([f for f in FAST if not f.startswith("teacher.")] + cls),
                                 "--teacher", str(teacher), "--out-dir", "runs/b", "--results", "b.json"])
    assert not Path("runs/b/teacher").exists()  # not trained again
    assert second["models"]["teacher"]["reused"] and second["models"]["teacher"]["top1"] == first["models"]["teacher"]["top1"]
    assert second["metric"] == "top1" and set(second["models"]) == MODELS
    assert second["targets"][0]["value"] == pytest.approx(
        second["models"]["teacher"]["macs"] / second["models"]["teacher_pruned"]["macs"])


def test_reused_teacher_must_be_a_run_folder(tmp_path):
    from slimcv.errors import SlimcvError

    with pytest.raises(SlimcvError, match="not a slimcv run folder"):
        chain_recipe(REPO / "recipes" / "camvid_chain_cpu.yaml", teacher=tmp_path / "nothing")


@pytest.mark.parametrize("name", ["camvid_chain_cpu", "camvid_chain_full", "cifar10_chain_cpu", "cifar10_chain_full"])
def test_chain_recipes_validate_with_the_chain_stages(name, tmp_path):
    recipe = chain_recipe(REPO / "recipes" / f"{name}.yaml")
    assert [s.name for s in recipe.stages] == ["teacher", "student", "distill", "prune", "quantize", "teacher_pruned",
                                               "bench", "report"]
    (tmp_path / "model.json").write_text("{}")  # validation does not load the run; the runner's preflight does
    reused = chain_recipe(REPO / "recipes" / f"{name}.yaml", teacher=tmp_path)
    assert [s.name for s in reused.stages][0] == "student"
    assert reused.stage("distill").config.teacher == str(tmp_path)


def _results(top1=80.0, ms=1.0, macs=100):
    return {"metric": "top1", "models": {"teacher": {"top1": top1, "latency_ms": {"ort-fp32": ms}, "macs": macs,
                                                     "params": 10, "file_bytes": 1000}}}


def test_compare_flags_only_changes_beyond_the_tolerance(tmp_path):
    assert not any(c.regressed for c in compare(_results(), _results(top1=79.8, ms=1.1)))
    regressed = {c.field for c in compare(_results(), _results(top1=79.0, ms=1.5, macs=200)) if c.regressed}
    assert regressed == {"top1", "latency ort-fp32", "macs"}
    gone = compare(_results(), {"metric": "top1", "models": {}})
    assert gone[0].regressed and gone[0].note.startswith("missing")
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(_results()))
    new.write_text(json.dumps(_results(top1=70.0)))
    assert compare_main([str(old), str(new), "--json", str(tmp_path / "c.json")]) == 1
    assert compare_main([str(old), str(old)]) == 0
    assert any(c["regressed"] for c in json.loads((tmp_path / "c.json").read_text()))
