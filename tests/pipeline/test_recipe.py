"""Recipe validation: every kind of mistake is caught before anything runs, named by file and key path."""
from pathlib import Path

import pytest
import yaml

from slimcv.errors import SlimcvError
from slimcv.pipeline.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path, recipe) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _error(tmp_path, recipe, *overrides) -> str:
    with pytest.raises(SlimcvError) as e:
        load_recipe(_write(tmp_path, recipe), overrides)
    assert not list(Path("runs").glob("*")) if Path("runs").exists() else True  # nothing was created
    return str(e.value)


def test_valid_recipe_builds_every_stage_config(tiny):
    r = load_recipe(tiny)
    assert [s.name for s in r.stages] == ["teacher", "distill", "prune"]
    assert r.stage("distill").config.teacher == str(Path("runs/tiny/teacher"))
    assert r.stage("distill").config.model_kwargs == {"base_width": 2, "depth": 2}
    assert r.stage("prune").config.source == str(Path("runs/tiny/distill"))
    assert r.stage("teacher").config.data.options == {"size": 32, "length": 32}


@pytest.mark.parametrize("mutate,expected", [
    (lambda r: r.update(epochz=3), ["r.yaml", "epochz: unknown key", "allowed: name, task, data"]),
    (lambda r: r["stages"][0].update(epochz=3), ["stages.teacher.epochz: unknown key", "allowed:", "epochs"]),
    (lambda r: r["stages"][1].update(optim={"nme": "adam"}), ["stages.distill.optim.nme: unknown key",
                                                              "allowed: name, lr"]),
    (lambda r: r["stages"][0].update(epochs="many"), ["stages.teacher.epochs", "valid integer", "'many'"]),
    (lambda r: r["stages"][1].update(mode="sideways"), ["stages.distill.mode", "'online' or 'offline'"]),
    (lambda r: r["models"]["student"].update(model="unet_smal"), ["models.student.model", "Unknown model",
                                                                  "unet_small"]),
    (lambda r: r["models"]["student"]["model_kwargs"].update(base_widht=2),
     ["models.student.model_kwargs.base_widht: unknown option", "allowed: base_width, depth"]),
    (lambda r: r["stages"][1].update(losses=[{"name": "kd"}, {"name": "kdd"}]),
     ["stages.distill.losses.1.name: unknown KD loss 'kdd'; allowed: cwd, dist, dkd, kd, feature"]),
    (lambda r: r["stages"][2].update(distill=[{"name": "feature"}]), ["stages.prune.distill.0.name: unknown KD loss"]),
    (lambda r: r["stages"][2].update(importance="l3"), ["stages.prune.importance: unknown importance 'l3'; allowed:",
                                                        "l1, l2"]),
    (lambda r: r["stages"][2].update(input="distil"), ["stages.prune.input: 'distil' is not an earlier stage",
                                                       "allowed: teacher, distill", "'distill'"]),
    (lambda r: r["stages"][2].pop("input"), ["stages.prune: 'input' is missing"]),
    (lambda r: r["stages"][1].update(teacher="prune"), ["stages.distill.teacher: 'prune' is not an earlier stage",
                                                        "allowed: teacher"]),
    (lambda r: r["stages"][2].update(type="prunee"), ["stages.prune.type: unknown stage type 'prunee'",
                                                      "allowed: train, distill, prune"]),
    (lambda r: r["stages"][0].update(out_dir="elsewhere"), ["stages.teacher.out_dir: set by the runner"]),
    (lambda r: r["stages"][2].update(teacher="teacher"), ["stages.prune.teacher: the prune stage takes no"]),
    (lambda r: r["stages"].append({"name": "teacher", "type": "train", "model": "student"}),
     ["two stages are named 'teacher'"]),
    (lambda r: r["models"]["student"].update(model="resnet20"), ["models.student", "classification model",
                                                                 "segmentation"]),
    (lambda r: r.update(stages=[]), ["stages", "at least 1"]),
])
def test_each_kind_of_mistake_is_named(tmp_path, tiny, mutate, expected):
    mutate(tiny)
    message = _error(tmp_path, tiny)
    for part in expected:
        assert part in message, (part, message)
    assert "Traceback" not in message


def test_all_problems_are_listed_at_once(tmp_path, tiny):
    tiny["stages"][0]["epochz"] = 3
    tiny["stages"][2]["importance"] = "l3"
    message = _error(tmp_path, tiny)
    assert "has 2 problems" in message and "epochz" in message and "l3" in message


def test_bad_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nstages: [oops\n")
    with pytest.raises(SlimcvError, match=r"broken.yaml is not valid YAML at line"):
        load_recipe(path)


def test_overrides_reach_stages_and_top_level_keys(tiny_yaml):
    r = load_recipe(tiny_yaml, ["distill.epochs=5", "data.batch_size=4", "prune.distill=[{name: kd}]",
                                "models.student.model_kwargs.base_width=3"])
    assert r.stage("distill").config.epochs == 5
    assert r.stage("teacher").config.data.batch_size == 4
    assert r.stage("prune").config.distill[0].name == "kd"
    assert r.stage("distill").config.model_kwargs["base_width"] == 3


@pytest.mark.parametrize("item,match", [("distil.epochs=5", "neither a recipe key .* nor a stage .* 'distill'"),
                                        ("distill.epochs", "needs KEY=VALUE"),
                                        ("distill.epochs=-1", "stages.distill.epochs"),
                                        ("distill=3", "names a whole stage")])
def test_bad_overrides_are_named(tiny_yaml, item, match):
    with pytest.raises(SlimcvError, match=match):
        load_recipe(tiny_yaml, [item])


@pytest.mark.parametrize("path", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_validate(path):
    r = load_recipe(path)
    assert len(r.stages) >= 4
    types = [s.type for s in r.stages]
    assert types[0] == "train" and "distill" in types and "prune" in types and "report" in types


def test_natural_short_forms_are_accepted_and_their_real_errors_shown(tiny):
    from slimcv.pipeline.recipe import validate

    short = dict(tiny, data="synthetic-shapes")
    short["stages"] = [{"train": {"name": "teacher", "model": "teacher", "epochs": 1}},
                       {"distill": {"teacher": "teacher", "model": "student", "epochz": 1, "data": "synthetic-shapes"}}]
    with pytest.raises(SlimcvError) as e:
        validate(short)
    assert "epochz" in str(e.value) and "must be a mapping" not in str(e.value)
    short["stages"][1]["distill"].pop("epochz")
    rec = validate(short)
    assert [s.type for s in rec.stages] == ["train", "distill"] and rec.config.data.spec == "synthetic-shapes"


def test_a_dense_only_kd_loss_on_classification_is_caught_before_training():
    from slimcv.pipeline.recipe import validate

    rec = {"name": "c", "data": "synthetic-shapes",
           "models": {"teacher": {"model": "resnet20"}, "student": {"model": "resnet8"}},
           "stages": [{"name": "teacher", "type": "train", "model": "teacher"},
                      {"name": "distill", "teacher": "teacher", "model": "student", "losses": [{"name": "cwd"}]}]}
    with pytest.raises(SlimcvError, match="'cwd' compares pixel maps"):
        validate(rec)
