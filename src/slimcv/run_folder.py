"""What a slimcv run folder holds: every file name, the folder kinds, and reading them (the one module that names
them; everything else asks it).

A folder's kind follows from the record its stage writes last, in this order: ``quantize.json`` (a quantize
folder: ONNX/OpenVINO files, each scored as deployed), ``compress.json`` (a compress search), ``prune.json`` (a
pruned model folder), ``config.json`` or ``model.json`` (a trained or saved model folder). An ``.onnx`` file is
an exported model with its ``.onnx.json`` sidecar.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from slimcv.errors import SlimcvError

# a model folder (train, distill, prune, a saved or imported model)
MODEL_JSON = "model.json"  # the architecture reference (artifact.py rebuilds from it)
CONFIG_JSON = "config.json"  # the settings a train-like stage ran with
SUMMARY_JSON = "summary.json"  # {"metrics": the last evaluation, "best": ...}
BEST_WEIGHTS = "best.safetensors"
MODEL_WEIGHTS = "model.safetensors"
WEIGHT_FILES = (BEST_WEIGHTS, MODEL_WEIGHTS)
LAST_JSON = "last.json"  # the pointer to the last checkpoint, what --resume continues from
CHECKPOINTS = "checkpoints"
METRICS_JSONL = "metrics.jsonl"  # one record per epoch
SPEED_JSON = "speed.json"  # the training speed probe's measurements
COMPARISON_JSON = "comparison.json"  # distill: the student against its teacher
PRUNE_JSON = "prune.json"
TEACHER_CACHE = "teacher_cache"  # distill's offline teacher maps (a folder)
SENSITIVITY_JSON = "sensitivity.json"
# other stages' folders
QUANTIZE_JSON = "quantize.json"
BENCH_JSON = "bench.json"
COMPRESS_JSON = "compress.json"
SEARCH_JSON = "compress_search.json"
SEARCH_STATE = "search_state.json"  # a compress search's progress, and its folder's marker
PREDICT_JSON = "predict.json"
MANIFEST_JSON = "manifest.json"  # a recipe stage's record (pipeline/manifest.py)
RECIPE_YAML = "recipe.yaml"  # the recipe as `slimcv run` ran it, overrides applied
RECIPE_HEADER = "# slimcv run: the recipe as run, overrides applied (run it again to resume)\n"
REPORT_JSON = "report.json"

# The keys slimcv writes in each record that marks a folder as its own: a user's file of the same name (a web
# app's manifest.json, say) does not make their folder slimcv's to replace.
RECORD_KEYS = {MANIFEST_JSON: {"stage", "type", "status", "fingerprint"},
               PREDICT_JSON: {"artifact", "runtime", "task", "images"},
               QUANTIZE_JSON: {"stage", "models", "recommendation"},
               SEARCH_STATE: {"key", "done", "spent_seconds"},
               MODEL_JSON: {"name", "num_classes"},
               CONFIG_JSON: {"data", "out_dir"},
               REPORT_JSON: {"baseline", "metric", "verdict", "rows"}}

Kind = Literal["quantize", "compress", "prune", "model", "onnx"]


def kind(path: str | Path) -> Kind | None:
    """What ``path`` is to slimcv, or None when slimcv did not write it."""
    path = Path(path)
    if path.is_file() and path.suffix == ".onnx":
        return "onnx"
    if not path.is_dir():
        return None
    for name, k in ((QUANTIZE_JSON, "quantize"), (COMPRESS_JSON, "compress"), (PRUNE_JSON, "prune"),
                    (CONFIG_JSON, "model"), (MODEL_JSON, "model")):
        if (path / name).is_file():
            return k  # type: ignore[return-value]
    return None


def read_json(path: str | Path) -> Any:
    """Parsed JSON, None when the file is absent; a damaged file raises a SlimcvError naming it."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise SlimcvError(f"{path} is damaged (not valid JSON: {e}); restore it or run the stage that wrote it "
                          "again.") from e


def read_record(folder: str | Path, name: str) -> dict[str, Any]:
    """A stage's JSON record in ``folder`` (``PRUNE_JSON``, ``QUANTIZE_JSON``, ...), {} when absent."""
    data = read_json(Path(folder) / name)
    return data if isinstance(data, dict) else {}


def holds_record(folder: str | Path, name: str) -> bool:
    """True when ``folder/name`` is the record slimcv writes under that name (its keys, not just its name)."""
    path = Path(folder) / name
    if not path.is_file():
        return False
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and RECORD_KEYS.get(name, set()) <= data.keys()
