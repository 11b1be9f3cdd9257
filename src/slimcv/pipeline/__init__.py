"""Recipes and whole chains: ``run`` a YAML recipe, ``compress`` a model toward a target, the ``demo``."""
from slimcv.pipeline.recipe import Recipe, load_recipe
from slimcv.pipeline.runner import RunResult, StageRecord, run
from slimcv.pipeline.stages import STAGE_TYPES

__all__ = ["Recipe", "RunResult", "STAGE_TYPES", "StageRecord", "load_recipe", "run"]
