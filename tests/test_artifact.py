"""Your model in, a deployable artifact out: user modules, torchvision weights files, external ONNX files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import slimcv
from slimcv import deploy
from slimcv.artifact import load_run_model, resolve_model
from slimcv.cli import main
from slimcv.errors import SlimcvError
from user_models import Blobs, ChannelCountInForward, UserSegNet

QUIET = {"progress": False, "latency_runs": 0}


@pytest.fixture
def blobs():
    return Blobs(24, seed=0), Blobs(8, seed=1)


def _same(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=1e-5, atol=1e-5)


def test_a_user_module_goes_through_prune_quantize_export_and_deploy(tmp_path, blobs):
    torch.manual_seed(0)
    net = UserSegNet(num_classes=3, width=8)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    pruned = slimcv.prune(net, data=blobs, remove=0.3, finetune_epochs=1, out_dir=tmp_path / "pruned", **QUIET)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the caller's module is untouched
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert params(pruned.model) < 0.85 * params(net)
    assert pruned.spec["name"] == "user_models:UserSegNet" and pruned.spec["pruning_history"]
    assert "miou" in pruned.metrics
    # reloads from its folder alone, without pickling: the class is rebuilt and the history replayed
    reloaded, spec = load_run_model(tmp_path / "pruned")
    x = blobs[1][0][0][None]
    _same(pruned.model, reloaded, x)
    assert spec["class_names"] == ["class_0", "class_1", "class_2"]

    q = slimcv.quantize(pruned.model, data=blobs, out_dir=str(tmp_path / "int8"), calibration=["minmax"],
                        latency_runs=2, progress=False)
    names = {m["name"] for m in q.models}
    assert {"fp32", "int8_minmax", "fp32_pytorch"} <= names and q.recommendation["name"] in names
    # the recommended file: an ONNX file, or NNCF's OpenVINO IR where OpenVINO won here
    assert q.path.is_file() and q.path.suffix in (".onnx", ".xml") and "miou" in q.metrics
    assert deploy.load(q.out_dir)(np.zeros((32, 32, 3), np.uint8)).mask.shape == (32, 32)

    onnx_path = tmp_path / "pruned" / "model.onnx"
    slimcv.export(tmp_path / "pruned", onnx_path, data=blobs)
    load_run_model(tmp_path / "pruned")  # exporting into the model folder leaves it loadable
    predictor = deploy.load(onnx_path)
    image = (blobs[1][0][0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    with torch.no_grad():
        ref = pruned.model.eval()(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255).argmax(1)[0]
    assert (predictor(image).mask == ref.numpy()).mean() > 0.99


def test_a_dataloader_pair_is_accepted_and_sets_the_batch_size(tmp_path, blobs):
    loaders = (DataLoader(blobs[0], batch_size=4), DataLoader(blobs[1], batch_size=4))
    result = slimcv.prune(UserSegNet(3, 8), data=loaders, remove=0.2, finetune_epochs=1, **QUIET)
    assert result.out_dir is None and "miou" in result.metrics
    r = slimcv.evaluate(result.model, loaders, quiet=True)
    assert r.metrics["miou"] == pytest.approx(result.metrics["miou"])


def test_a_class_of_the_script_being_run_is_saved_and_reloads_with_the_class_in_hand(tmp_path, blobs):
    class Local(UserSegNet):
        pass

    with pytest.warns(UserWarning, match=r"slimcv.load\(folder, model=Local\)"):
        pruned = slimcv.prune(Local(4, 8), data=blobs, remove=0.3, out_dir=tmp_path / "p", **QUIET)
    again = slimcv.load(tmp_path / "p", model=Local)  # weights and pruning history, the class given
    assert isinstance(again, Local)
    _same(pruned.model, again, torch.rand(1, 3, 32, 32))
    slimcv.artifact._IN_HAND.clear()  # as in another program
    with pytest.raises(SlimcvError, match=r"defined in a script or notebook.*model=Local"):
        load_run_model(tmp_path / "p")
    assert main(["eval", str(tmp_path / "p")]) == 2  # one sentence, no traceback


def test_a_layer_torch_pruning_cannot_follow_is_named_in_one_sentence(blobs):
    with pytest.raises(SlimcvError, match=r"right after layer 'a'.*ignore=\['a'\]") as e:
        slimcv.prune(ChannelCountInForward(3), data=blobs, remove=0.5, **QUIET)
    assert "\n" not in str(e.value)


def _write_tv_weights(tmp_path: Path, builder, name: str, **kwargs) -> Path:
    path = tmp_path / f"{name}.pth"
    torch.save(builder(weights=None, **kwargs).state_dict(), path)  # a bare torchvision state_dict
    return path


def test_torchvision_resnet18_with_a_weights_file(tmp_path):
    import torchvision

    torch.manual_seed(0)
    w = _write_tv_weights(tmp_path, torchvision.models.resnet18, "r18", num_classes=4)
    images = torch.rand(16, 3, 32, 32)
    labels = torch.arange(16) % 4
    data = (TensorDataset(images, labels), TensorDataset(images[:8], labels[:8]))
    loaded = resolve_model("resnet18", weights=w, num_classes=4)
    ref = torchvision.models.resnet18(num_classes=4)
    ref.load_state_dict(torch.load(w, weights_only=True))
    _same(loaded.model, ref, images[:2])
    pruned = slimcv.prune("resnet18", data=data, weights=str(w), remove=0.3, out_dir=tmp_path / "p", **QUIET)
    reloaded, spec = load_run_model(tmp_path / "p")
    assert spec["name"] == "resnet18" and spec["num_classes"] == 4
    _same(pruned.model, reloaded, images[:2])


def test_torchvision_deeplabv3_mobilenet_with_a_weights_file(tmp_path, capsys):
    import torchvision

    torch.manual_seed(0)
    w = _write_tv_weights(tmp_path, torchvision.models.segmentation.deeplabv3_mobilenet_v3_large, "dl",
                          num_classes=3, weights_backbone=None, aux_loss=True)
    loaded = resolve_model("deeplabv3_mobilenet_v3_large", weights=w, num_classes=3)  # aux head dropped
    ref = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(num_classes=3, weights_backbone=None,
                                                                       aux_loss=True)
    ref.load_state_dict(torch.load(w, weights_only=True))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.eval()(x), ref.eval()(x)["out"])
    out = tmp_path / "dl.onnx"
    rc = main(["export", "--model", "deeplabv3_mobilenet_v3_large", "--weights", str(w), "--num-classes", "3",
               "--size", "64", "64", "-o", str(out)])
    assert rc == 0 and out.is_file() and json.loads(Path(str(out) + ".json").read_text())["task"] == "segmentation"


def test_an_onnx_file_exported_outside_slimcv_is_quantized_evaluated_and_benched(tmp_path, blobs):
    torch.manual_seed(0)
    net = UserSegNet(3, 8).eval()
    path = tmp_path / "plain.onnx"
    torch.onnx.export(net, (torch.rand(1, 3, 32, 32),), str(path), dynamo=False, input_names=["pixels"],
                      dynamic_axes={"pixels": {0: "n"}})
    r = slimcv.evaluate(str(path), blobs, quiet=True)
    ref = slimcv.evaluate(net, blobs, quiet=True)
    assert r.metrics["miou"] == pytest.approx(ref.metrics["miou"], abs=1e-3)
    q = slimcv.quantize(str(path), data=blobs, out_dir=str(tmp_path / "q"), latency_runs=2, progress=False)
    assert {m["name"] for m in q.models} >= {"fp32", "int8_minmax"}
    assert all(m["metrics"]["miou"] >= 0 for m in q.models)
    b = slimcv.bench([str(path), str(tmp_path / "q")], runs=2, warmup=1, memory=False, runtimes=["ort"])
    assert len(b.models) >= 3 and all(m.runtimes for m in b.models)


def test_a_model_folder_that_does_not_exist_is_named(tmp_path, blobs, capsys):
    with pytest.raises(SlimcvError, match="does not exist"):
        slimcv.prune(str(tmp_path / "nope"), data=blobs, remove=0.3, **QUIET)
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_train_and_distill_take_modules_and_a_teacher_object(tmp_path, blobs):
    torch.manual_seed(0)
    teacher = slimcv.train(UserSegNet(3, 8), data=blobs, epochs=2, out_dir=tmp_path / "t", progress=False,
                           tensorboard=False, optim={"lr": 0.01})
    reloaded, spec = load_run_model(tmp_path / "t", which="last")  # the final weights (best may be earlier)
    _same(teacher.model, reloaded, blobs[1][0][0][None])
    student = UserSegNet(3, 4)
    r = slimcv.distill(student, teacher=teacher.model, data=blobs, epochs=1, progress=False,
                       losses=[{"name": "kd", "temperature": 1.0}])
    assert r.train.model is student and {row["model"] for row in r.comparison} == {"teacher", "student"}
    with pytest.raises(SlimcvError, match="pass the constructor's arguments as model_kwargs"):
        slimcv.distill(UserSegNet(3, 4), teacher=str(tmp_path / "t"), data=blobs, epochs=1, out_dir=tmp_path / "s")
    by_folder = slimcv.distill(UserSegNet(3, 4), teacher=str(tmp_path / "t"), data=blobs, epochs=1, progress=False,
                               out_dir=tmp_path / "s", model_kwargs={"width": 4})
    assert load_run_model(tmp_path / "s")[1]["teacher"]["source"] == str(tmp_path / "t")
    assert by_folder.train.run_dir == tmp_path / "s"
    with pytest.raises(SlimcvError, match="has no weights"):
        slimcv.distill(UserSegNet(3, 4), teacher="unet", data=blobs, epochs=1)


def test_bench_measures_a_name_with_a_weights_file_from_the_cli(tmp_path, capsys):
    import torchvision

    w = _write_tv_weights(tmp_path, torchvision.models.resnet18, "r18", num_classes=4)
    out = tmp_path / "b.json"
    rc = main(["bench", "--model", "resnet18", "--weights", str(w), "--num-classes", "4", "--input-size", "32", "32",
               "--runs", "2", "--warmup", "1", "--batch-sizes", "1", "--runtimes", "eager", "--no-memory",
               "-o", str(out)])
    assert rc == 0
    row = json.loads(out.read_text())["models"][0]
    assert row["name"] == "resnet18" and row["params"] == sum(p.numel() for p in torchvision.models.resnet18(
        num_classes=4).parameters())
    assert main(["bench", "--weights", str(w)]) == 2


def test_an_operator_the_exporter_cannot_translate_is_named_in_one_sentence(tmp_path, blobs):
    from user_models import UsesSvd

    with pytest.raises(SlimcvError, match=r"aten::linalg_svd.*not supported.*--opset") as e:
        slimcv.export(UsesSvd(3), tmp_path / "m.onnx", data=blobs)
    assert "\n" not in str(e.value) and not (tmp_path / "m.onnx").exists()


def test_bench_and_report_take_stage_results_and_name_weight_pairs(tmp_path, blobs):
    import torchvision

    pruned = slimcv.prune(UserSegNet(3, 8), data=blobs, remove=0.3, out_dir=tmp_path / "p", **QUIET)
    w = _write_tv_weights(tmp_path, torchvision.models.resnet18, "r18", num_classes=4)
    b = slimcv.bench([pruned, ("resnet18", str(w))], input_size=(32, 32), num_classes=4, runs=2, warmup=1,
                     batch_sizes=[1], runtimes=["eager"], memory=False, quiet=True)
    assert [m.name for m in b.models] == ["p", "resnet18"]
    page = slimcv.report([pruned], out=tmp_path / "r", predict=False, quiet=True)
    assert page.html.is_file()
    with pytest.raises(SlimcvError, match="was not saved"):
        slimcv.report([slimcv.prune(UserSegNet(3, 8), data=blobs, remove=0.3, **QUIET)], out=tmp_path / "r2")


@pytest.fixture
def fresh_process():
    """As in a new process: no factory named by the user yet, no opt-in."""
    from slimcv import trust

    saved = set(trust.GIVEN)
    trust.GIVEN.clear()
    yield
    trust.GIVEN.clear()
    trust.GIVEN.update(saved)


def _folder_naming(tmp_path: Path, name: str, kwargs: dict) -> Path:
    from slimcv.models import save_weights

    folder = tmp_path / "sent"
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps({"name": name, "num_classes": 3, "kwargs": kwargs,
                                                   "task": "segmentation"}))
    save_weights(UserSegNet(num_classes=3, width=4), folder / "model.safetensors")
    return folder


def test_a_model_folder_runs_no_code_without_the_switch(tmp_path, fresh_process, capsys):
    marker = tmp_path / "ran"
    folder = _folder_naming(tmp_path, "os:system", {"command": f"touch {marker}"})
    with pytest.raises(SlimcvError, match="'os'.*--trust-remote-code"):
        load_run_model(folder)
    assert main(["eval", str(folder), "--data", "synthetic-shapes"]) == 2
    assert "--trust-remote-code" in capsys.readouterr().err
    # even trusted, a file may only name an nn.Module class or a Python function: os.system is neither
    assert main(["--trust-remote-code", "eval", str(folder), "--data", "synthetic-shapes"]) == 2
    assert "neither an nn.Module class nor a Python function" in capsys.readouterr().err
    assert not marker.exists()


def test_a_folder_module_is_not_even_imported_without_the_switch(tmp_path, fresh_process, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "sent_code.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                           "from user_models import UserSegNet as Net\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = _folder_naming(tmp_path, "sent_code:Net", {"width": 4})
    with pytest.raises(SlimcvError, match="sent_code"):
        slimcv.load(folder)
    assert not marker.exists()
    net = slimcv.load(folder, trust_remote_code=True)  # the user's opt-in for this load
    assert marker.exists() and isinstance(net, UserSegNet)
    with slimcv.trust_remote_code():
        load_run_model(folder)


def test_a_class_in_hand_reloads_a_folder_without_running_its_code(tmp_path, fresh_process):
    folder = _folder_naming(tmp_path, "their_package.nets:Net", {"width": 4})
    net = slimcv.load(folder, model=UserSegNet)
    assert isinstance(net, UserSegNet) and net.head.out_channels == 3
    with pytest.raises(SlimcvError, match="--trust-remote-code"):
        slimcv.load(folder)


def test_a_factory_the_user_named_reloads_its_own_folders(tmp_path, fresh_process):
    from slimcv.artifact import save_model

    net = resolve_model("user_models:UserSegNet", num_classes=3, kwargs={"width": 4})
    save_model(net.model, tmp_path / "own", net.spec)
    assert isinstance(load_run_model(tmp_path / "own")[0], UserSegNet)


@pytest.fixture(scope="module")
def moved_run(tmp_path_factory):
    """A run trained at 48x40, batch 4, with hflip and 16 loader workers recorded, then moved elsewhere."""
    import shutil

    root = tmp_path_factory.mktemp("moved")
    slimcv.train({"model": "unet", "model_kwargs": {"base_width": 4, "depth": 2},
                  "data": {"spec": "synthetic-shapes", "options": {"length": 8}, "size": [48, 40], "batch_size": 4,
                           "augment": ["hflip"], "workers": 0, "val_subset": 4},
                  "epochs": 1, "progress": False, "tensorboard": False, "out_dir": str(root / "run")})
    cfg = json.loads((root / "run" / "config.json").read_text())
    cfg["data"]["workers"] = 16  # as a 16-core GPU box would have recorded it
    (root / "run" / "config.json").write_text(json.dumps(cfg))
    shutil.move(root / "run", root / "moved")
    return root / "moved"


def test_data_given_to_a_moved_run_changes_where_not_how(moved_run):
    from slimcv.artifact import run_data_config
    from slimcv.config import DataConfig, usable_cores

    kept = run_data_config(moved_run, "synthetic-shapes")
    assert kept["size"] == [48, 40] and kept["batch_size"] == 4 and kept["augment"] == ["hflip"]
    assert "workers" not in kept  # a machine's setting is resolved on the machine at hand
    assert run_data_config(moved_run, "cifar10:/elsewhere") == {"spec": "cifar10:/elsewhere"}  # other data: its own
    assert DataConfig(**run_data_config(moved_run)).loader_workers() <= usable_cores()
    assert DataConfig(workers=16).loader_workers() <= usable_cores()


def test_export_of_a_moved_run_with_data_keeps_its_training_size(moved_run, tmp_path):
    assert main(["export", str(moved_run), "--data", "synthetic-shapes", "-o", str(tmp_path / "m.onnx")]) == 0
    sidecar = json.loads((tmp_path / "m.onnx.json").read_text())
    assert sidecar["resize"] == [48, 40]
    assert main(["eval", str(moved_run), "--data", "synthetic-shapes", "--out", str(tmp_path / "e.json")]) == 0


def test_a_torchvision_segmentation_object_goes_through_prune_quantize_and_export(tmp_path):
    """Its dict output is taken as its "out" logits; saved under its registered name, its folder reloads."""
    import torchvision

    torch.manual_seed(0)
    images, masks = torch.rand(8, 3, 64, 64), torch.randint(0, 3, (8, 64, 64))
    data = (TensorDataset(images[:6], masks[:6]), TensorDataset(images[6:], masks[6:]))
    net = torchvision.models.segmentation.lraspp_mobilenet_v3_large(num_classes=3, weights_backbone=None)
    pruned = slimcv.prune(net, data=data, remove=0.2, finetune_epochs=0, out_dir=tmp_path / "p", **QUIET)
    assert pruned.spec["name"] == "lraspp_mobilenet_v3_large" and pruned.model(images[:1]).shape == (1, 3, 64, 64)
    _same(pruned.model, slimcv.load(tmp_path / "p"), images[:1])
    q = slimcv.quantize(net, data=data, out_dir=tmp_path / "q", calibration=["minmax"], nncf=False, latency_runs=1,
                        progress=False)
    assert q.models and all(m["metrics"]["miou"] >= 0 for m in q.models)
    r = slimcv.export(net, tmp_path / "m.onnx", data)
    assert r.agreement.argmax_agreement >= 0.99


def test_a_model_with_auxiliary_outputs_trains_on_its_main_logits(tmp_path):
    import torchvision

    net = torchvision.models.googlenet(num_classes=3, aux_logits=True, init_weights=False)
    data = (TensorDataset(torch.rand(8, 3, 64, 64), torch.arange(8) % 3),
            TensorDataset(torch.rand(4, 3, 64, 64), torch.arange(4) % 3))
    r = slimcv.train(net, data=data, epochs=1, progress=False, tensorboard=False, out_dir=str(tmp_path / "t"))
    assert "top1" in r.metrics


@pytest.mark.parametrize("kind", ["external_data", "fixed_batch", "fixed_size"])
def test_onnx_files_as_exporters_write_them_go_through_quantize_eval_and_bench(tmp_path, blobs, kind):
    """torch's default exporter keeps the weights in model.onnx.data; others fix the batch or the input size."""
    import onnx

    torch.manual_seed(0)
    net = UserSegNet(3, 8).eval()
    path = tmp_path / "made" / "net.onnx"
    path.parent.mkdir()
    size = 16 if kind == "fixed_size" else 32  # the blobs are 32x32
    axes = {} if kind != "external_data" else {"pixels": {0: "n"}}
    torch.onnx.export(net, (torch.rand(1, 3, size, size),), str(path), dynamo=False, input_names=["pixels"],
                      dynamic_axes=axes)
    if kind == "external_data":
        model = onnx.load(str(path))
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="net.onnx.data", size_threshold=0)
        assert (path.parent / "net.onnx.data").is_file() and path.stat().st_size < 10_000
    r = slimcv.evaluate(str(path), blobs, quiet=True, batch_size=4)  # 4 images a batch: a fixed batch of 1 too
    if kind != "fixed_size":
        assert r.metrics["miou"] == pytest.approx(slimcv.evaluate(net, blobs, quiet=True).metrics["miou"], abs=1e-3)
    q = slimcv.quantize(str(path), data=blobs, out_dir=str(tmp_path / "q"), latency_runs=2, progress=False,
                        nncf=False)
    assert {m["name"] for m in q.models} >= {"fp32", "int8_minmax"}
    assert all(m["metrics"]["miou"] >= 0 for m in q.models)
    b = slimcv.bench([str(path)], runs=2, warmup=1, memory=False, runtimes=["ort"], batch_sizes=(1,))
    assert b.models[0].runtimes


ARCHITECTURES = [("resnet18", {}), ("resnet50", {}), ("mobilenet_v2", {}), ("mobilenet_v3_large", {}),
                 ("efficientnet_b0", {}), ("regnet_y_400mf", {}), ("convnext_tiny", {}), ("densenet121", {}),
                 ("squeezenet1_1", {}), ("vit_b_16", {"ignore": ["conv_proj"]})]


@pytest.mark.slow
@pytest.mark.parametrize("name,options", ARCHITECTURES, ids=[a for a, _ in ARCHITECTURES])
def test_torchvision_architectures_prune_30_percent_and_export_with_parity(tmp_path, name, options):
    """Each family a user brings: pruned by 30% of its parameters, exported, and ONNX Runtime agrees with PyTorch."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.get_model(name, weights=None, num_classes=4)
    images, labels = torch.rand(8, 3, 224, 224), torch.arange(8) % 4
    data = (TensorDataset(images[:4], labels[:4]), TensorDataset(images[4:], labels[4:]))
    pruned = slimcv.prune(net, data=data, remove=0.3, target="params", finetune_epochs=0, out_dir=tmp_path / "p",
                          **QUIET, **options)
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert params(pruned.model) < 0.8 * params(net)
    r = slimcv.export(str(tmp_path / "p"), tmp_path / "m.onnx", data)
    assert r.agreement.argmax_agreement == 1.0


def test_every_stage_takes_its_input_through_one_front_door():
    """A config (or its dict), or the model with keyword options: the same shape for train, distill, prune and
    quantize, and the same errors."""
    import inspect

    from slimcv.artifact import stage_config
    from slimcv.config import PruneConfig, QuantizeConfig, TrainConfig
    from slimcv.distill import distill as distill_module
    from slimcv.engine import train as train_module
    from slimcv.prune import prune as prune_module
    from slimcv.quantize import quantize as quantize_module

    for module in (train_module, distill_module, prune_module, quantize_module):
        assert "stage_config(" in inspect.getsource(module), module.__name__
    cfg, src = stage_config(PruneConfig, "runs/x", {"remove": 0.5}, "prune", model_field="source",
                            defaults={"out_dir": None})
    assert (cfg.source, cfg.remove, cfg.out_dir, src) == ("runs/x", 0.5, None, "runs/x")
    cfg, src = stage_config(QuantizeConfig, {"source": "runs/x"}, {"out_dir": "q"}, "quantize", model_field="source")
    assert (cfg.out_dir, src) == ("q", None)  # a config's own fields, options on top; it names the model itself
    cfg, src = stage_config(TrainConfig, "resnet8", {"epochs": 3}, "train", model_field="model")
    assert (cfg.model, cfg.epochs, src) == ("resnet8", 3, "resnet8")
    with pytest.raises(SlimcvError, match="epochs"):
        stage_config(TrainConfig, "resnet8", {"epochs": -1}, "train", model_field="model")
