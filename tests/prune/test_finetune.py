"""Fine-tuning after pruning: epochs scaled to what each step removed ("auto"), and the threads it runs on."""
from __future__ import annotations

import json
import math

import pytest
import torch

import slimcv
from slimcv.models import create_model
from slimcv.prune.prune import AUTO_REFERENCE_EPOCHS, auto_epochs

DATA = {"spec": "synthetic-shapes", "options": {"size": 32, "length": 16}, "batch_size": 8, "workers": 0,
        "val_subset": 8}


def test_auto_epochs_scale_with_the_fraction_removed():
    assert auto_epochs(40, 0.5) == 20
    assert auto_epochs(40, 0.26) == 11  # rounded up
    assert auto_epochs(40, 0.0) == 1 and auto_epochs(3, 0.01) == 1  # a step always trains at least once
    assert auto_epochs(10, 0.5) < auto_epochs(10, 0.75)


def _steps_epochs(out):
    """Epochs each step's fine-tuning run actually trained, read from its own record."""
    record = json.loads((out / "prune.json").read_text())
    trained = [len((out / f"step_{step['step']}" / "metrics.jsonl").read_text().splitlines())
               for step in record["steps"]]
    return record, trained


def test_a_slimcv_run_is_fine_tuned_for_its_epochs_times_the_macs_removed(tmp_path):
    slimcv.train({"model": "unet_small", "model_kwargs": {"base_width": 8, "depth": 2}, "data": DATA, "epochs": 6,
                  "out_dir": str(tmp_path / "src"), "progress": False, "tensorboard": False, "threads": 1})
    r = slimcv.prune(str(tmp_path / "src"), remove=0.5, target="macs", steps=2, finetune_epochs="auto",
                     out_dir=str(tmp_path / "p"), progress=False, latency_runs=0)
    record, trained = _steps_epochs(tmp_path / "p")
    before = r.before["macs"]
    macs = [before] + [s["macs"] for s in record["steps"]]
    expected = [math.ceil(6 * (macs[i] - macs[i + 1]) / before - 1e-9) for i in range(2)]
    assert record["finetune_epochs"] == expected == trained
    assert sum(expected) >= 3  # about half the MACs went: about half the training again
    # the pruned folder keeps the source's training length: pruning it again with 'auto' scales from 6 too
    assert json.loads((tmp_path / "p" / "config.json").read_text())["epochs"] == 6


def test_a_users_module_without_a_record_uses_the_reference(tmp_path):
    torch.manual_seed(0)
    net = create_model("unet_small", 4, base_width=8, depth=2)
    r = slimcv.prune(net, data=DATA, remove=0.3, target="macs", finetune_epochs="auto", out_dir=str(tmp_path / "p"),
                     progress=False, latency_runs=0)
    record, trained = _steps_epochs(tmp_path / "p")
    removed = 1 - record["steps"][0]["macs"] / r.before["macs"]
    assert trained == record["finetune_epochs"] == [auto_epochs(AUTO_REFERENCE_EPOCHS, removed)]


def test_auto_is_accepted_by_the_cli_and_nonsense_is_refused(tmp_path, capsys):
    from slimcv.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["prune", str(tmp_path), "--finetune-epochs", "many"])
    assert exit_.value.code == 2
    assert "'auto'" in capsys.readouterr().err


def test_fine_tuning_runs_on_the_threads_asked_for(tmp_path):
    was = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        net = create_model("unet_small", 4, base_width=8, depth=2)
        slimcv.prune(net, data=DATA, remove=0.3, finetune_epochs=1, threads=1, out_dir=str(tmp_path / "p"),
                     progress=False, latency_runs=2)
        assert torch.get_num_threads() == 1
        assert json.loads((tmp_path / "p" / "step_1" / "config.json").read_text())["threads"] == 1
        assert json.loads((tmp_path / "p" / "prune.json").read_text())["after"]["latency_threads"] == 1
    finally:
        torch.set_num_threads(was)
