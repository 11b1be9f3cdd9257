"""Recipes and whole chains: ``run`` a YAML recipe, ``compress`` a model to a latency target, the ``demo``."""
from slimcv.pipeline.compress import CompressResult, compress
from slimcv.pipeline.demo import demo, demo_recipe
from slimcv.pipeline.recipe import Recipe, load_recipe
from slimcv.pipeline.runner import RunResult, StageRecord, run
from slimcv.pipeline.stages import STAGE_TYPES

__all__ = ["CompressResult", "Recipe", "RunResult", "STAGE_TYPES", "StageRecord", "compress",
           "demo", "demo_recipe", "load_recipe", "run"]
