import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import slimcv
from slimcv.errors import SlimcvError

SYNTH = {"spec": "synthetic-shapes", "options": {"size": 32, "length": 64}, "augment": ["hflip"], "batch_size": 8,
         "workers": 0, "val_subset": 32}


def _cfg(out: str, **over):
    cfg = {"model": "unet_small", "model_kwargs": {"base_width": 4, "depth": 2}, "data": SYNTH, "epochs": 2,
           "optim": {"name": "adam", "lr": 0.01}, "out_dir": out, "progress": False, "tensorboard": False}
    cfg.update(over)
    return cfg


@pytest.mark.data
def test_loss_falls_and_miou_rises_on_camvid_subset(camvid_root):
    data = {"spec": f"camvid:{camvid_root}", "size": [88, 120], "augment": [], "batch_size": 4, "workers": 0,
            "subset": 16, "val_subset": 8, "val_split": "train"}
    result = slimcv.train({"model": "unet_small", "model_kwargs": {"base_width": 8, "depth": 3}, "data": data,
                           "epochs": 8, "optim": {"name": "adam", "lr": 0.003}, "schedule": {"name": "constant"}, "deterministic": True,
                           "out_dir": "camvid", "progress": False, "tensorboard": False})
    losses = [r["train"]["loss"] for r in result.history]
    mious = [r["val"]["miou"] for r in result.history]
    assert losses[-1] < 0.8 * losses[0], losses
    assert mious[-1] > mious[0] + 5, mious
    # evaluated at the native 360x480 resolution of the masks although trained at 88x120
    assert result.metrics["pixel_acc"] > 30
    saved = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in saved] == list(range(1, 9))
    assert (result.run_dir / "best.safetensors").is_file()


def test_existing_run_needs_resume(tmp_path):
    slimcv.train(_cfg("r", epochs=1))
    with pytest.raises(SlimcvError, match="--resume"):
        slimcv.train(_cfg("r", epochs=1))
    with pytest.raises(SlimcvError, match="config differs"):
        slimcv.train(_cfg("r", epochs=2, resume=True, optim={"name": "sgd", "lr": 0.01}))


def test_model_task_must_match_data():
    with pytest.raises(SlimcvError, match="classification model"):
        slimcv.train(_cfg("x", model="resnet20", model_kwargs={}))


def _cli(out: Path, epochs: int, resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "slimcv.cli", "train", "--model", "unet_small", "--data", "synthetic-shapes",
           "--set", "data.options={size: 48, length: 192}", "--set", "model_kwargs={base_width: 8, depth: 2}",
           "--set", "data.val_subset=32", "--set", "tensorboard=false", "--set", "progress=false",
           "--epochs", str(epochs), "-b", "8", "--workers", "0", "--deterministic", "--seed", "3",
           "--lr", "0.005", "--out-dir", str(out)]
    return cmd + (["--resume"] if resume else [])


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ref = subprocess.run(_cli(tmp_path / "ref", 4), capture_output=True, text=True, env=env, timeout=300)
    assert ref.returncode == 0, ref.stderr

    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli(run, 4), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 200
    while time.time() < deadline and not (run / "last.json").exists():
        time.sleep(0.05)
    time.sleep(0.5)  # now inside epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = json.loads((run / "last.json").read_text())["epoch"]
    assert 1 <= done < 4, "the kill must land before the run finished"

    res = subprocess.run(_cli(run, 4, resume=True), capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "Resumed from" in res.stderr
    a = json.loads((tmp_path / "ref" / "summary.json").read_text())["metrics"]
    b = json.loads((run / "summary.json").read_text())["metrics"]
    assert a["miou"] == b["miou"]
    assert a["per_class_iou"] == b["per_class_iou"]
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


DDP_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
import conftest  # registers tiny_seg_test
import slimcv
from slimcv.engine import distributed as D
r = slimcv.train({{"model": "tiny_seg_test", "data": {{"spec": "synthetic-shapes", "options": {{"size": 32, "length": 64}},
    "augment": [], "batch_size": {bs}, "workers": 0, "val_subset": 30, "batched_augment": {ba!r}}}, "epochs": 2, "optim": {{"name": "sgd", "lr": 0.05}},
    "schedule": {{"name": "constant"}}, "out_dir": {out!r}, "progress": False, "tensorboard": False, "seed": 1}})
if D.is_main():
    json.dump({{"miou": r.metrics["miou"], "pixel_acc": r.metrics["pixel_acc"],
               "loss": r.history[-1]["train"]["loss"]}}, open({out!r} + "/result.json", "w"))
"""


@pytest.mark.parametrize("batched", ["off", "on"])  # the per-sample loader, and batches made on the device
def test_two_process_gloo_ddp_matches_one_process(tmp_path, batched):
    tests_dir = str(Path(__file__).resolve().parents[1])
    one = tmp_path / "one.py"
    one.write_text(DDP_SCRIPT.format(tests=tests_dir, bs=8, out=str(tmp_path / "one"), ba=batched))
    two = tmp_path / "two.py"
    two.write_text(DDP_SCRIPT.format(tests=tests_dir, bs=4, out=str(tmp_path / "two"), ba=batched))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r1 = subprocess.run([sys.executable, str(one)], capture_output=True, text=True, env=env, timeout=300)
    assert r1.returncode == 0, r1.stderr
    r2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                         str(two)], capture_output=True, text=True, env=env, timeout=300)
    assert r2.returncode == 0, r2.stderr[-3000:]
    a = json.loads((tmp_path / "one" / "result.json").read_text())
    b = json.loads((tmp_path / "two" / "result.json").read_text())
    assert b["miou"] == pytest.approx(a["miou"], abs=0.5)
    assert b["pixel_acc"] == pytest.approx(a["pixel_acc"], abs=0.5)
    assert b["loss"] == pytest.approx(a["loss"], rel=0.02)


def test_bf16_channels_last_clipping_class_weights_on_cpu():
    r = slimcv.train(_cfg("opts", epochs=1, amp="bf16", channels_last=True, clip_grad_norm=1.0,
                          class_weights="median_frequency", optim={"name": "sgd", "lr": 0.05},
                          schedule={"name": "step", "warmup_epochs": 0.5}))
    loss = r.history[0]["train"]["loss"]
    assert 0 < loss < 10
    assert 0 <= r.metrics["miou"] <= 100
