"""The Python API: every stage is reachable as slimcv.<name>, callable, and stays so after submodule imports."""
import importlib

import pytest

import slimcv

STAGES = ["train", "distill", "prune", "quantize", "export", "bench", "report", "run", "compress", "demo"]


@pytest.mark.parametrize("name", STAGES)
def test_stage_is_a_stable_callable(name):
    first = getattr(slimcv, name)
    for sub in ("slimcv.prune.structured", "slimcv.distill.losses", "slimcv.bench.latency",
                "slimcv.quantize.ptq", "slimcv.export.verify", "slimcv.report.plots"):
        importlib.import_module(sub)  # importing a subpackage binds it on slimcv; it must stay callable
    assert callable(first) and getattr(slimcv, name) is getattr(slimcv, name) and callable(getattr(slimcv, name))


def test_calling_a_stage_package_runs_the_stage_function():
    with pytest.raises(slimcv.SlimcvError, match="prune config"):
        slimcv.prune({"source": "x", "remove": 2})  # validated by the real prune stage
