"""Stage manifests: what a stage was asked to do, what it consumed and produced, and whether it finished.

``<run>/<stage>/manifest.json``::

    {"stage": "distill", "type": "distill", "status": "running" | "done",
     "fingerprint": sha256 of the resolved config (paths and progress/device settings left out),
     "params": the resolved config, "inputs": {"teacher": digest of the teacher stage},
     "outputs": {"best.safetensors": sha256, ...}, "digest": sha256 of fingerprint + outputs,
     "metrics": {...}, "wall_time_s": 41.2, "attempts": 2, "started": ..., "finished": ...}

A stage is skipped when its manifest is ``done`` with the same fingerprint and inputs and its outputs
still hash the same; it is resumed when the manifest is ``running`` with the same fingerprint and
inputs; otherwise its folder is cleared and it runs again (and so, through their inputs, do the stages
that consume it).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from slimcv._io import atomic_write_json
from slimcv.run_folder import MANIFEST_JSON, holds_record

# Settings that change where or how visibly a stage runs, not what it computes.
VOLATILE = {"out_dir", "resume", "progress", "tensorboard", "device", "threads", "keep_checkpoints", "data.workers",
            "data.cache", "cache.dir"}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hex sha256 of a canonical JSON encoding (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def resolved_params(config: Any, folders: dict[str, str]) -> dict[str, Any]:
    """The config as JSON with volatile keys dropped and stage folders written as ``@stage``."""
    data = json.loads(config.model_dump_json()) if hasattr(config, "model_dump_json") else dict(config)
    return _normalise(data, folders)


def _normalise(obj: Any, folders: dict[str, str], path: str = "") -> Any:
    if isinstance(obj, dict):
        return {k: _normalise(v, folders, f"{path}{k}.") for k, v in obj.items() if f"{path}{k}" not in VOLATILE}
    if isinstance(obj, list):
        return [_normalise(v, folders, path) for v in obj]
    if isinstance(obj, str) and obj in folders:
        return folders[obj]
    return obj


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The stage's manifest, or None when it has none of slimcv's (unreadable, or a user's file of that name: the
    folder is then not slimcv's to replace)."""
    if not holds_record(folder, MANIFEST_JSON):
        return None
    return json.loads((Path(folder) / MANIFEST_JSON).read_text())


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> Path:
    """Write the manifest atomically."""
    return atomic_write_json(Path(folder) / MANIFEST_JSON, manifest)


def hash_outputs(folder: str | Path, files: list[str]) -> dict[str, str]:
    """sha256 of each produced file that exists (relative names as keys)."""
    folder = Path(folder)
    return {name: sha256_file(folder / name) for name in files if (folder / name).is_file()}


def outputs_intact(folder: str | Path, manifest: dict[str, Any]) -> bool:
    """True when every output the manifest lists still exists with the same hash."""
    outputs = manifest.get("outputs") or {}
    folder = Path(folder)
    return bool(outputs) and all((folder / n).is_file() and sha256_file(folder / n) == h for n, h in outputs.items())


def stage_digest(fingerprint: str, outputs: dict[str, str]) -> str:
    """What a downstream stage records as this stage's identity: its settings and the bytes it produced."""
    return sha256_json({"fingerprint": fingerprint, "outputs": outputs})
