"""The chain on CUDA (skipped without a GPU): train with batches made on the device, distill, prune, quantize and
bench with eager-cuda, each with the model and its inputs on one device."""
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
    result = slimcv.bench([str(teacher)], runtimes=("eager", "eager-cuda", "ort"), batch_sizes=(1,), runs=3,
                          memory=False)
    timed = {rt.runtime for m in result.models for rt in m.runtimes}
    assert {"eager", "eager-cuda", "ort-fp32"} <= timed
