"""The chain on CUDA (skipped without a GPU): train with batches made on the device, distill, prune, quantize (with
its CUDA row), bench with eager-cuda, report, compress, predict and serve, each with the model and its inputs on one
device."""
import pytest
import torch

import slimcv

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

DATA = {"spec": "synthetic-shapes", "options": {"size": 32, "length": 64}, "batch_size": 16, "workers": 0,
        "val_subset": 16, "augment": ["hflip", "shift", "rotate"]}
QUIET = {"progress": False, "tensorboard": False}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("cuda") / "teacher"
    slimcv.train({"model": "unet", "model_kwargs": {"base_width": 8, "depth": 2}, "data": DATA, "epochs": 3,
                  "device": "cuda", "optim": {"name": "adam", "lr": 0.01}, "out_dir": str(out), **QUIET})
    return out


def test_training_on_cuda_uses_batches_made_on_the_gpu(teacher, capsys):
    import json

    speed = json.loads((teacher / "speed.json").read_text())
    assert speed["device"].startswith("cuda")
    from slimcv.data import load_data
    from slimcv.data.device_batches import DeviceBatches, device_batches

    batches = device_batches(load_data(DATA).train, 16, torch.device("cuda"), mode="auto", quiet=True)
    assert isinstance(batches, DeviceBatches) and batches.images.is_cuda
    x, y = next(iter(batches))
    assert x.is_cuda and y.is_cuda and x.shape == (16, 3, 32, 32)


def test_gpu_and_cpu_batches_agree_in_distribution():
    from slimcv.data import load_data
    from slimcv.data.device_batches import device_batches

    train = load_data({**DATA, "options": {"size": 32, "length": 256}}).train
    stats = []
    for device in ("cpu", "cuda"):
        b = device_batches(train, 32, torch.device(device), mode="on", quiet=True)
        ignored = torch.stack([(y == 255).float().mean().cpu() for _, y in b])
        means = torch.stack([x.mean().cpu() for x, _ in b])
        stats.append((float(ignored.mean()), float(means.mean())))
    assert abs(stats[0][0] - stats[1][0]) < 0.02 and abs(stats[0][1] - stats[1][1]) < 0.05


def test_distill_prune_quantize_and_bench_on_cuda(teacher, tmp_path):
    kd = slimcv.distill({"teacher": str(teacher), "model": "unet", "model_kwargs": {"base_width": 4, "depth": 2},
                         "data": DATA, "epochs": 1, "mode": "online", "device": "cuda", "out_dir": str(tmp_path / "kd"),
                         **QUIET})
    assert kd.train.best["value"] is not None
    pruned = slimcv.prune({"source": str(teacher), "data": DATA, "remove": 0.3, "finetune_epochs": 1,
                           "device": "cuda", "latency_runs": 0, "out_dir": str(tmp_path / "pruned"),
                           "progress": False})
    assert pruned.after["params"] < pruned.before["params"]
    q = slimcv.quantize({"source": str(teacher), "data": DATA, "calibration_images": 8, "latency_runs": 3,
                         "out_dir": str(tmp_path / "int8"), "progress": False})
    assert any(m["precision"] == "int8" for m in q.models)
    rows = {m["name"]: m for m in q.models}  # quantize's CUDA row, scored there like the CPU's
    assert rows["fp32_pytorch_cuda"]["metrics"]["miou"] == pytest.approx(rows["fp32_pytorch"]["metrics"]["miou"],
                                                                         abs=0.5)
    result = slimcv.bench([str(teacher)], runtimes=("eager", "eager-cuda", "ort"), batch_sizes=(1,), runs=3,
                          memory=False)
    timed = {rt.runtime for m in result.models for rt in m.runtimes}
    assert {"eager", "eager-cuda", "ort-fp32"} <= timed
    page = slimcv.report([str(teacher), str(tmp_path / "kd"), str(tmp_path / "pruned")], out=tmp_path / "report",
                         measure=True, images=2, quiet=True)  # timed and overlaid with CUDA present
    assert page.html.is_file() and "<html" in page.html.read_text().lower()


def test_compress_trains_on_cuda_and_times_on_the_cpu(teacher, tmp_path):
    import json

    from slimcv.artifact import load_run_model
    from slimcv.pipeline import search as S
    from slimcv.pipeline.budget import compress_to_budget

    space = S.SearchSpace(prune_ratios=(0.5,), students=[("unet", {"base_width": 4, "depth": 2})], runtimes=("ort",),
                          sensitivity_drops=())
    r = compress_to_budget(teacher, DATA, target_latency_ms=1e6, budget_minutes=0.5, space=space, finalists=2,
                           out_dir=tmp_path / "c", latency_runs=4, progress=False)
    record = json.loads((tmp_path / "c" / "compress_search.json").read_text())
    assert r.train_device == "cuda" and record["latency_measured_on"] == "cpu"
    trained = [c for c in r.candidates if c.kind != "source" and c.metric is not None]
    assert trained and all(c.latency_ms > 0 for c in r.candidates)
    model, _ = load_run_model(r.folder)  # a folder trained on the GPU loads and runs on the CPU
    assert model(torch.rand(1, 3, 32, 32)).shape[-2:] == (32, 32)


def test_predict_and_serve_in_ort_cuda_answer_like_the_cpu(teacher, tmp_path):
    pytest.importorskip("fastapi")
    import json

    import numpy as np

    from slimcv.deploy import runtimes
    from slimcv.deploy.predictor import Predictor
    from slimcv.export.onnx import export
    from tests.deploy.test_serve import _png, _post, running

    missing = runtimes.get(runtimes.ORT_CUDA).check()
    if missing:
        pytest.skip(f"ort-cuda: {missing}")
    onnx = export(str(teacher), tmp_path / "m.onnx").path
    image = (np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)
    cpu, gpu = Predictor(onnx, runtime="ort"), Predictor(onnx, runtime="ort-cuda")
    assert gpu.runtime == "ort-cuda"
    agree = (np.asarray(cpu(image).mask) == np.asarray(gpu(image).mask)).mean()
    assert agree > 0.99
    with running(gpu) as (url, _):
        status, _, body = _post(url + "/predict?format=json", _png(image), "image/png")
    assert status == 200 and json.loads(body)


def test_a_detector_trains_on_cuda_with_its_boxes_warped_on_the_device(tmp_path):
    data = {"spec": "synthetic-shapes:detection", "options": {"size": 64, "length": 64}, "batch_size": 8,
            "workers": 0, "val_subset": 8, "augment": ["hflip", "shift"]}
    r = slimcv.train("slimdet_s", data=data, epochs=2, device="cuda", out_dir=str(tmp_path / "det"),
                     optim={"name": "adamw", "lr": 0.003}, **QUIET)
    assert r.metrics["map"] >= 0 and all(h["train"]["loss"] == h["train"]["loss"] for h in r.history)
