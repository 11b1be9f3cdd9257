"""slimcv compress: the plan it derives from a target, and a tiny end-to-end run with a measured outcome."""
import json
from pathlib import Path

import pytest

import slimcv
from slimcv.errors import SlimcvError
from slimcv.pipeline.compress import compress, compress_recipe
from slimcv.pipeline.recipe import validate


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.pipeline.conftest import TINY

    out = tmp_path_factory.mktemp("compress") / "trained"
    slimcv.train({"model": "unet", "model_kwargs": {"base_width": 4, "depth": 2}, "data": TINY["data"], "epochs": 2,
                  "progress": False, "tensorboard": False, "out_dir": str(out)})
    return out


@pytest.mark.parametrize("kwargs,remove,target,steps", [
    ({"target_speedup": 4}, 0.75, "macs", 3),
    ({"target_macs": 2}, 0.5, "macs", 2),
    ({"target_size": 2}, 0.0, None, 0),         # INT8 alone is about 4x smaller
    ({"target_size": 7}, 0.5, "params", 2),     # 3.5x from INT8, the rest from pruning
])
def test_plan_follows_the_target(trained, kwargs, remove, target, steps):
    recipe, plan = compress_recipe(str(trained), None, **kwargs)
    assert plan["remove"] == pytest.approx(remove)
    stages = {s["name"]: s for s in recipe["stages"]}
    if steps:
        assert stages["prune"]["target"] == target and stages["prune"]["steps"] == steps
        assert stages["prune"]["distill"][0]["name"] == "kd"  # fine-tuning distils from the original
    else:
        assert "prune" not in stages and stages["quantize"]["input"] == "original"
    assert recipe["data"]["spec"] == "synthetic-shapes"  # read from the run folder
    validate(recipe)  # the generated recipe is a valid recipe


@pytest.mark.parametrize("kwargs,match", [({}, "exactly one target"),
                                          ({"target_speedup": 2, "target_size": 2}, "exactly one target"),
                                          ({"target_speedup": 1}, "above 1"),
                                          ({"target_macs": 20}, "at most 90%"),
                                          ({"target_macs": 2, "max_drop": -1}, "max-drop")])
def test_bad_targets_are_refused(trained, kwargs, match):
    with pytest.raises(SlimcvError, match=match):
        compress_recipe(str(trained), None, **kwargs)


def test_a_checkpoint_file_means_its_run_folder(trained, tmp_path):
    recipe, _ = compress_recipe(str(trained / "best.safetensors"), None, target_macs=2)
    assert recipe["models"]["original"] == {"run": str(trained)}
    (tmp_path / "w.safetensors").write_bytes(b"")
    with pytest.raises(SlimcvError, match="bare weights file"):
        compress_recipe(str(tmp_path / "w.safetensors"), "synthetic-shapes", target_macs=2)


def test_a_model_name_needs_data_and_is_trained_first():
    with pytest.raises(SlimcvError, match="Give --data"):
        compress_recipe("unet", None, target_macs=2)
    recipe, _ = compress_recipe("unet", "synthetic-shapes", target_macs=2, teacher_epochs=3)
    assert recipe["stages"][0] == {"name": "original", "type": "train", "model": "arch", "epochs": 3}


def test_compress_end_to_end_reports_the_measured_outcome(trained, tmp_path):
    result = compress(str(trained), target_macs=2, max_drop=100, epochs=1, out_dir=tmp_path / "c",
                      overrides=["report.images=1", "bench.runs=5", "quantize.latency_runs=5"])
    statuses = {r.name: r.status for r in result.run.stages}
    assert statuses == {"prune": "ran", "quantize": "ran", "bench": "ran", "report": "ran"}
    prune = json.loads((tmp_path / "c" / "prune" / "prune.json").read_text())
    assert prune["after"]["macs"] <= 0.55 * prune["before"]["macs"]
    o = result.outcome
    assert o["target"] == 2 and o["achieved"] >= 1.8 and o["within_budget"]
    assert {r["stage"] for r in o["rows"]} >= {"original", "prune", "quantize"}
    assert Path(result.run.report).is_file()


def test_a_trained_module_or_name_with_weights_is_saved_as_the_source_folder(trained, tmp_path):
    from slimcv.artifact import load_run_model, read_summary
    from slimcv.pipeline.compress import _import_source

    net, spec = load_run_model(trained)
    plan = compress(net, "synthetic-shapes", target_macs=2, out_dir=tmp_path / "c", dry_run=True)
    assert plan.plan["remove"] == 0.5 and not (tmp_path / "c" / "source").exists()  # a dry run writes nothing
    folder = _import_source(net, None, "synthetic-shapes", tmp_path / "src", dry_run=False)
    again, _ = load_run_model(folder)
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in net.parameters())
    assert read_summary(folder)["best"]["metric"] == "miou"
    with pytest.raises(SlimcvError, match="needs --data"):
        compress(net, None, target_macs=2, out_dir=tmp_path / "d")


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
                 "synthetic-shapes:classification", "--target-macs", "2", "--max-drop", "100", "--epochs", "1",
                 "-o", str(out), "--set", "bench.runs=3", "--set", "quantize.latency_runs=3",
                 "--set", "report.images=1"])
    assert code == 0
    assert read_model_spec(out / "source")["input_shape"][1:] == [3, 64, 64]
    assert (out / "compress.json").is_file() and (out / "bench" / "bench.json").is_file()


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
