"""Run-directory checkpoints: safetensors weights + a weights_only state file, written atomically.

Layout of a run directory::

    config.json  model.json  metrics.jsonl  best.safetensors  best.json
    checkpoints/epoch_0007/{model.safetensors, state.pt}
    last.json    -> {"epoch": 7, "dir": "checkpoints/epoch_0007"}   (renamed into place last)

An epoch folder is fully written under a temporary name and renamed; only then is ``last.json``
replaced, so a crash at any moment leaves the previous checkpoint intact and pointed to.
"""
from __future__ import annotations

import json
import pickle
import random
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimcv._io import atomic_dir, atomic_write_json, atomic_write_safetensors
from slimcv.errors import SlimcvError
from slimcv.run_folder import LAST_JSON, MODEL_WEIGHTS


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def save_checkpoint(run_dir: str | Path, epoch: int, model: nn.Module, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``checkpoints/epoch_NNNN`` atomically, then point ``last.json`` at it; keep the newest ``keep``."""
    run_dir = Path(run_dir)
    ckpts = run_dir / "checkpoints"
    ckpts.mkdir(parents=True, exist_ok=True)
    final = ckpts / f"epoch_{epoch:04d}"
    with atomic_dir(final) as tmp:
        atomic_write_safetensors(unwrap(model).state_dict(), tmp / MODEL_WEIGHTS)
        torch.save({**state, "epoch": epoch}, tmp / "state.pt")
    atomic_write_json(run_dir / LAST_JSON, {"epoch": epoch, "dir": f"checkpoints/{final.name}"})
    for old in sorted(p for p in ckpts.glob("epoch_*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in ckpts.glob(".epoch_*"):  # temporaries a killed save left (folders; writer locks are files)
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    return final


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """The folder ``last.json`` points to, or None when the run has no checkpoint yet."""
    pointer = Path(run_dir) / LAST_JSON
    if not pointer.is_file():
        return None
    try:
        info = json.loads(pointer.read_text())
        path = Path(run_dir) / info["dir"]
    except (ValueError, KeyError) as e:
        raise SlimcvError(f"{pointer} is damaged ({e}); delete it to restart the run from scratch.") from e
    if not (path / MODEL_WEIGHTS).is_file():
        raise SlimcvError(f"{pointer} points to {path}, which is missing; delete last.json to restart the run.")
    return path


def load_state(ckpt_dir: str | Path) -> dict[str, Any]:
    """Read ``state.pt`` with ``weights_only=True``: tensors and plain containers only, no code."""
    path = Path(ckpt_dir) / "state.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise SlimcvError(f"Refused to load {path}: it holds pickled objects that could run code.") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise SlimcvError(f"Checkpoint state {path} is truncated or unreadable ({e}).") from e


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)
