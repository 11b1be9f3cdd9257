"""slimcv compress: the plan it derives from a target, and a tiny end-to-end run with a measured outcome."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import slimcv
from slimcv.errors import SlimcvError
from slimcv.pipeline.compress import compress


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.pipeline.conftest import TINY

    out = tmp_path_factory.mktemp("compress") / "trained"
    slimcv.train({"model": "unet", "model_kwargs": {"base_width": 4, "depth": 2}, "data": TINY["data"], "epochs": 2,
                  "progress": False, "tensorboard": False, "out_dir": str(out)})
    return out


# a search small enough for a test: one pruned copy, one student, ONNX Runtime only, no sensitivity analysis
SMALL = {"space": {"prune_ratios": [0.5], "students": [["unet", {"base_width": 2, "depth": 2}]], "runtimes": ["ort"],
                   "int8": [], "sensitivity_drops": []},
         "latency_runs": 4, "finalists": 1, "report": False, "progress": False}


@pytest.mark.parametrize("kwargs,match", [({}, "one target"),
                                          ({"target_speedup": 2, "target_latency": 5}, "one target"),
                                          ({"target_speedup": 0}, "greater than 0"),
                                          ({"target_speedup": 2, "max_drop": -1}, "max_drop"),
                                          ({"target_speedup": 2, "budget_minutes": 0}, "budget_minutes")])
def test_bad_targets_are_refused(trained, kwargs, match, tmp_path):
    with pytest.raises(SlimcvError, match=match):
        compress(str(trained), out_dir=tmp_path / "c", dry_run=True, **kwargs)


def test_the_plan_is_stated_up_front_and_a_dry_run_writes_nothing(trained, tmp_path, capsys):
    r = compress(str(trained), target_speedup=3, out_dir=tmp_path / "c", dry_run=True)
    assert r.plan["budget_minutes"] == 5.0 and "as long as the source took to train" in r.plan["budget_why"]
    assert "target 3x the speed of the source in ONNX Runtime FP32" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_a_checkpoint_file_means_its_run_folder(trained, tmp_path):
    r = compress(str(trained / "best.safetensors"), target_speedup=2, out_dir=tmp_path / "c", dry_run=True)
    assert r.plan["source"] == str(trained)
    (tmp_path / "w.safetensors").write_bytes(b"")
    with pytest.raises(SlimcvError, match="bare weights file"):
        compress(str(tmp_path / "w.safetensors"), "synthetic-shapes", target_speedup=2, dry_run=True)


def test_a_model_name_needs_data():
    with pytest.raises(SlimcvError, match="Give --data"):
        compress("unet", target_speedup=2, dry_run=True)


def test_the_old_targets_and_epochs_are_refused_with_a_sentence(trained, capsys):
    from slimcv.cli import main

    assert main(["compress", "--model", str(trained), "--target-macs", "2"]) == 2
    assert "slimcv prune --remove" in capsys.readouterr().err
    assert main(["compress", "--model", str(trained), "--target-speedup", "2", "--epochs", "3"]) == 2
    assert "--budget-minutes" in capsys.readouterr().err


def test_compress_end_to_end_returns_the_model_its_file_and_the_table(trained, tmp_path):
    r = compress(str(trained), target_latency=1e6, max_drop=100, budget_minutes=0.1, out_dir=tmp_path / "c",
                 **{**SMALL, "report": True, "report_images": 1})
    assert r.met and r.search.winner is not None
    assert {row["candidate"] for row in r.table} == {"source", "pruned_0.5", "unet-base_width2-depth2"}
    assert all(row["latency_ms"] > 0 and row["speedup_vs_source_best"] > 0 for row in r.table)
    assert isinstance(r.model, torch.nn.Module) and r.file.suffix == ".onnx" and r.file.is_file()
    assert Path(str(r.file) + ".json").is_file()  # the sidecar a predictor needs
    import slimcv.deploy

    pred = slimcv.deploy.load(r.file)
    assert len(pred.predict_batch([np.zeros((32, 32, 3), np.uint8)])) == 1
    outcome = json.loads((tmp_path / "c" / "compress.json").read_text())["outcome"]
    assert outcome["met"] and outcome["folder"] == str(r.folder)
    assert r.report is not None and r.report.is_file()


def test_the_selection_enforces_max_drop_and_names_the_closest_on_a_miss():
    from slimcv.pipeline import search as S
    from slimcv.pipeline.budget import BudgetResult, _choose

    def cand(name, ms, metric, meets=True):
        return S.Candidate(name, kind="pruned", params=1, macs=1, latency_ms=ms, meets=meets, metric=metric)

    a, b, slow = cand("a", 1.0, 60.0), cand("b", 2.0, 58.0), cand("slow", 9.0, 70.0, meets=False)
    r = BudgetResult(None, None, [a, b, slow], 10.0, 5.0, 0.0, source_metric=61.0, max_drop=1.5)
    folders = {"a": Path("a"), "b": Path("b"), "slow": Path("slow")}
    _choose(r, folders)
    assert r.met and r.winner is a and r.folder == Path("a")
    r.max_drop = 0.5
    _choose(r, folders)
    assert not r.met and r.winner is None and r.closest is a  # the most accurate that meets the latency


def test_a_search_killed_with_sigkill_resumes_and_reuses_finished_candidates(trained, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "c"
    settings = {**SMALL, "space": {**SMALL["space"], "students": [["unet", {"base_width": 2, "depth": 2}],
                                                                   ["unet", {"base_width": 3, "depth": 2}]]}}
    call = (f"import slimcv; slimcv.compress({str(trained)!r}, target_latency=1e6, max_drop=100, "
            f"budget_minutes=0.2, out_dir={str(out)!r}, **{settings!r})")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", call], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    state, first = out / "search_state.json", None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and first is None:
        try:
            done = json.loads(state.read_text()).get("done", {})
        except (OSError, ValueError):
            done = {}
        first = next((k for k in done if k.startswith("proxy/")), None)
        time.sleep(0.02)
    assert first is not None, "the search finished no proxy run"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = {p: p.stat().st_mtime_ns for p in (out / first).rglob("*") if p.is_file()}
    r = compress(str(trained), target_latency=1e6, max_drop=100, budget_minutes=0.2, out_dir=out, **settings)
    assert first in r.search.reused and r.met
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # reused, not trained again


def test_a_trained_module_or_name_with_weights_is_saved_as_the_source_folder(trained, tmp_path):
    from slimcv.artifact import load_run_model, read_summary
    from slimcv.pipeline.compress import _import_source

    net, spec = load_run_model(trained)
    plan = compress(net, "synthetic-shapes", target_speedup=2, out_dir=tmp_path / "c", dry_run=True)
    assert plan.plan["source"] == "<UNet>" and not (tmp_path / "c").exists()  # a dry run writes nothing
    folder = _import_source(net, None, "synthetic-shapes", tmp_path / "src")
    again, _ = load_run_model(folder)
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in net.parameters())
    assert read_summary(folder)["best"]["metric"] == "miou"
    with pytest.raises(SlimcvError, match="needs data"):
        compress(net, None, target_speedup=2, out_dir=tmp_path / "d")


def test_compress_a_name_with_a_weights_file_runs_to_the_end(tmp_path):
    """`compress --model NAME --weights FILE` (and an image-folder model) record their input size, so the bench
    step after pruning and quantizing knows what to time."""
    from slimcv.artifact import read_model_spec
    from slimcv.cli import main
    from slimcv.models import create_model, save_weights

    weights = tmp_path / "w.safetensors"
    save_weights(create_model("resnet8", 3), weights)
    out = tmp_path / "c"
    code = main(["compress", "--model", "resnet8", "--weights", str(weights), "--data",
                 "synthetic-shapes:classification", "--target-latency", "1000000", "--max-drop", "100",
                 "--budget-minutes", "0.1", "-o", str(out), "--no-report", "--set", "latency_runs=3",
                 "--set", "progress=false", "--set", "space={prune_ratios: [0.5], students: [], runtimes: [ort], "
                 "int8: [], sensitivity_drops: []}"])
    assert code == 0
    assert read_model_spec(out / "source")["input_shape"][1:] == [3, 64, 64]
    assert (out / "compress.json").is_file() and (out / "deploy" / "model.onnx").is_file()


def test_a_model_trained_on_an_image_folder_without_a_size_records_it(tmp_path):
    import numpy as np
    from PIL import Image

    from slimcv.artifact import read_model_spec
    from slimcv.bench.bench import bench

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    slimcv.train({"model": "resnet8", "data": {"spec": f"imagefolder:{tmp_path / 'imgs'}", "options": {"val_per_class": 2}, "batch_size": 4,
                                               "workers": 0}, "epochs": 1, "progress": False, "tensorboard": False,
                  "out_dir": str(tmp_path / "run")})
    assert read_model_spec(tmp_path / "run")["input_shape"] == [1, 3, 40, 48]
    result = bench([str(tmp_path / "run")], runtimes=["eager"], batch_sizes=(1,), runs=2, memory=False, quiet=True)
    assert result.models[0].input_shape == [3, 40, 48]
    space = {"prune_ratios": [0.5], "students": [], "runtimes": ["ort"], "int8": [], "sensitivity_drops": []}
    r = compress(str(tmp_path / "run"), target_latency=1e6, max_drop=100, budget_minutes=0.05, space=space,
                 out_dir=tmp_path / "c", latency_runs=2, report=False, progress=False)
    assert r.met and r.file.is_file()


def test_a_missed_target_exits_1_and_names_the_closest(trained, tmp_path, capsys):
    from slimcv.cli import main

    code = main(["compress", str(trained), "--target-latency", "0.000001", "--budget-minutes", "0.05", "-o",
                 str(tmp_path / "c"), "--no-report", "--set", "latency_runs=2", "--set", "progress=false",
                 "--set", "space={prune_ratios: [0.5], students: [], runtimes: [ort], int8: [], "
                 "sensitivity_drops: []}"])
    assert code == 1
    assert "Target missed" in capsys.readouterr().out
    assert json.loads((tmp_path / "c" / "compress.json").read_text())["outcome"]["met"] is False


def test_a_source_a_killed_run_left_without_its_summary_is_compressed(trained, tmp_path):
    """Killed before its end: no summary.json and no best weights; the last checkpoint is the source."""
    import shutil

    source = tmp_path / "killed"
    shutil.copytree(trained, source)
    (source / "summary.json").unlink()
    (source / "best.safetensors").unlink()
    r = compress(str(source), target_latency=1e6, max_drop=100, budget_minutes=0.05, out_dir=tmp_path / "c",
                 **SMALL)
    assert r.file is not None and r.file.is_file()


def test_a_bare_model_name_is_trained_first_for_teacher_epochs(tmp_path):
    data = {"spec": "synthetic-shapes:classification", "options": {"size": 32, "length": 16}, "batch_size": 8,
            "workers": 0, "val_subset": 8}
    space = {"prune_ratios": [0.5], "students": [], "runtimes": ["ort"], "int8": [], "sensitivity_drops": []}
    r = compress("resnet8", data, target_latency=1e6, max_drop=100, budget_minutes=0.05, teacher_epochs=2,
                 out_dir=tmp_path / "c", space=space, latency_runs=2, report=False, progress=False)
    records = [json.loads(line) for line in (tmp_path / "c" / "source" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and r.file.is_file()


def test_compress_is_a_recipe_stage_whose_folder_the_report_reads(tmp_path, tiny):
    # the stage searches from an earlier stage's model on the recipe's data, resumes from its own record, and the
    # report stage shows the chosen model and opens with the search's sentence
    tiny["stages"] = [tiny["stages"][0],
                      {"name": "compress", "input": "teacher", "target_latency": 1e6, "max_drop": 100,
                       "budget_minutes": 0.1, **SMALL},
                      {"name": "report", "inputs": ["teacher", "compress"], "images": 1, "measure": False}]
    from slimcv.pipeline import run

    result = run(tiny, out_dir=tmp_path / "r")
    metrics = result["compress"].metrics
    outcome = json.loads((tmp_path / "r" / "compress" / "compress.json").read_text())["outcome"]
    assert metrics["met"] is True and metrics["sentence"] == outcome["sentence"]
    assert outcome["sentence"].startswith(f"{outcome['chosen']['speedup']:.1f}x faster than the teacher ")
    chosen = tmp_path / "r" / "compress" / outcome["folder_in_out_dir"] if outcome["folder_in_out_dir"] else None
    data = json.loads(((chosen or Path(outcome["folder"])) / "config.json").read_text())["data"]
    assert data["options"] == tiny["data"]["options"] and data["batch_size"] == 8  # the recipe's data, recorded
    report = json.loads((tmp_path / "r" / "report" / "report.json").read_text())
    assert [r["name"] for r in report["rows"]][-1] == "compress"
    assert report["verdict"][0]["text"] == outcome["sentence"] and report["verdict"][0]["kind"] == "compress"
    again = run(tiny, out_dir=tmp_path / "r")
    assert {r.status for r in again.stages} == {"skipped"}


def test_the_outcome_sentence_says_speed_runtime_cost_and_how_to_serve(tmp_path):
    from slimcv.pipeline import search as S
    from slimcv.pipeline.budget import BudgetResult
    from slimcv.pipeline.compress import outcome_sentence

    plan = {"label": "2x the speed of the source in ONNX Runtime FP32", "max_drop": 1.0}
    c = S.Candidate("pruned_0.5", runtime="openvino", precision="int8", kind="pruned", params=1, macs=1,
                    latency_ms=1.0, speedup=2.54, meets=True, metric=79.3)
    met = BudgetResult(c, tmp_path, [c], 2.5, 1.25, 1.0, source_metric=80.0, closest=c, max_drop=1.0)
    xml = tmp_path / "model_int8_nncf.xml"
    assert outcome_sentence(met, plan, xml, "the teacher") == (
        f"2.5x faster than the teacher in ONNX Runtime FP32 on this CPU (OpenVINO, INT8), -0.7 points, file {xml}; "
        f"serve it with `slimcv serve {xml}`.")
    onnx = tmp_path / "model.onnx"
    assert f"`slimcv serve {onnx} --runtime openvino`" in outcome_sentence(met, plan, onnx)  # not ORT's default
    missed = BudgetResult(None, tmp_path, [c], 2.5, 1.25, 1.0, source_metric=83.0, closest=c, max_drop=1.0)
    text = outcome_sentence(missed, plan, xml)
    assert text.startswith("Target not met within 1 points: the closest is 2.5x faster than the source") and \
        "-3.7 points" in text and "; nothing scored within 1 points" in text
    # the other end of the frontier: the fastest candidate within max_drop, and the target that chooses it
    source = S.Candidate("source", runtime="openvino", kind="source", params=1, macs=1, latency_ms=1.6,
                         speedup=1.56, meets=False, metric=83.0)
    pruned = S.Candidate("pruned_0.25", runtime="ort", kind="pruned", params=1, macs=1, latency_ms=1.4,
                         speedup=1.79, meets=False, metric=82.4)
    missed.candidates += [source, pruned]
    text = outcome_sentence(missed, {**plan, "target": "speedup"}, xml)
    assert "; within 1 points the fastest is pruned_0.25 in ONNX Runtime FP32, 1.8x at -0.6 points " \
           "(--target-speedup 1.7 chooses it)" in text
    assert "--target-latency 1.4 chooses it" in outcome_sentence(missed, {**plan, "target": "latency"}, xml)
    nothing = BudgetResult(None, None, [c], 2.5, 1.25, 1.0, source_metric=83.0, closest=None, max_drop=1.0)
    assert outcome_sentence(nothing, plan, None).startswith("Target not met: no candidate reached 2x the speed")
