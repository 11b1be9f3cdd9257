"""finetune: a run folder's model trained further, with the loss it was trained with and KD from a teacher."""
from __future__ import annotations

import json

import pytest

from slimcv.errors import SlimcvError
from slimcv.pipeline.finetune import FinetuneConfig, finetune

DATA = {"spec": "synthetic-shapes", "options": {"size": 32, "length": 16}, "batch_size": 8, "workers": 0,
        "val_subset": 8}
QUIET = {"progress": False, "tensorboard": False}


@pytest.fixture
def weighted_source(tmp_path):
    """A tiny U-Net trained one epoch with class weights into tmp_path/source."""
    import slimcv

    r = slimcv.train({"model": "unet", "model_kwargs": {"base_width": 4, "depth": 2}, "data": DATA, "epochs": 1,
                      "out_dir": str(tmp_path / "source"), "class_weights": "median_frequency", **QUIET})
    return tmp_path / "source", r


def _config(run_dir) -> dict:
    return json.loads((run_dir / "config.json").read_text())


def test_finetune_keeps_the_class_weights_the_model_was_trained_with(tmp_path, weighted_source):
    source, _ = weighted_source
    finetune(FinetuneConfig(source=str(source), data=DATA, epochs=1, out_dir=str(tmp_path / "ft"), **QUIET))
    assert _config(tmp_path / "ft")["class_weights"] == "median_frequency"
    finetune(FinetuneConfig(source=str(source), data=DATA, epochs=1, out_dir=str(tmp_path / "plain"),
                            class_weights=None, **QUIET))
    assert _config(tmp_path / "plain")["class_weights"] is None


def test_offline_finetune_reads_the_teachers_maps_from_a_cache(tmp_path, weighted_source):
    source, _ = weighted_source
    cache = tmp_path / "maps"
    common = dict(source=str(source), data=DATA, epochs=1, teacher=str(source), losses=[{"name": "kd"}], **QUIET)
    r = finetune(FinetuneConfig(**common, mode="offline", cache={"dir": str(cache)}, out_dir=str(tmp_path / "ft")))
    assert r.history[-1]["train"]["kd"] > 0  # KD terms came from the cached maps: the objective holds no teacher
    assert any(p.is_file() for p in cache.rglob("*"))
    online = finetune(FinetuneConfig(**common, out_dir=str(tmp_path / "online")))
    assert online.history[-1]["train"]["kd"] > 0
    assert not (tmp_path / "online" / "teacher_cache").exists()


def test_offline_finetune_on_a_users_dataset_says_to_go_online(tmp_path, weighted_source):
    from slimcv.data import load_data

    source, _ = weighted_source
    b = load_data(DATA)
    users = (b.train, b.val)  # the user's own Datasets: no files to key a cache by
    with pytest.raises(SlimcvError, match="mode='online'"):
        finetune(FinetuneConfig(source=str(source), data=DATA, epochs=1, teacher=str(source), mode="offline",
                                out_dir=str(tmp_path / "ft"), **QUIET), users)
