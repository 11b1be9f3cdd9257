"""Pruning: structured channel pruning on Torch-Pruning's dependency graph, saved as a replayable history."""
from slimcv.prune.structured import IMPORTANCES, PruneResult, apply_pruning_history, prune_structured

__all__ = ["IMPORTANCES", "PruneResult", "apply_pruning_history", "prune_structured"]
