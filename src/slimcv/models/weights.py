"""Weights from local files only: safetensors, or a state_dict read with ``weights_only=True``."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from slimcv.errors import SlimcvError

HUB_HINT = (
    "slimcv never downloads at run time: fetch the weights on a machine with internet access "
    "(e.g. torchvision.models.get_weight('{w}').get_state_dict()), save them with torch.save(state_dict, 'w.pth'), "
    "copy the file here and pass its path."
)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from a .safetensors file or a torch state_dict file without running pickled code."""
    path = Path(path)
    if path.is_dir():
        raise SlimcvError(f"{path} is a folder; give its weights file (e.g. {path}/best.safetensors).")
    if not path.is_file():
        raise SlimcvError(f"Weights file {path} does not exist; check the path.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise SlimcvError(f"Weights file {path} is truncated or not a safetensors file ({e}).") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise SlimcvError(
            f"Refused to load {path}: it holds pickled objects beyond tensors, which could run code. "
            "Save only the state_dict (torch.save(model.state_dict(), ...)) or use safetensors."
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise SlimcvError(f"Weights file {path} is truncated or not a PyTorch file ({e}).") from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise SlimcvError(f"{path} does not hold a state_dict (a mapping of names to tensors).")
    return obj


def load_weights(model: nn.Module, source: str | Path, strict: bool = True) -> nn.Module:
    """Load a local weights file into ``model``; mismatches are listed in one readable message."""
    if isinstance(source, str) and not Path(source).exists() and (source.isupper() or "_Weights." in source or "://" in source):
        raise SlimcvError(f"Weights {source!r} are not a local file. " + HUB_HINT.format(w=source))
    state = read_state_dict(source)
    state = adapt_keys(model, {k.removeprefix("module."): v for k, v in state.items()})
    check_state_dict(model, state, str(source), strict)
    model.load_state_dict(state, strict=strict)
    return model


def adapt_keys(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fit a file saved from the bare torchvision network to slimcv's wrapper of it (``model.`` prefix), and
    drop an auxiliary head (``aux_classifier``) the deployed model does not have."""
    own = model.state_dict()
    if state and not any(k in own for k in state) and any(f"model.{k}" in own for k in state):
        state = {f"model.{k}": v for k, v in state.items()}
    if not any(".aux_classifier." in k or k.startswith("aux_classifier.") for k in own):
        state = {k: v for k, v in state.items() if not (k.startswith(("aux_classifier.", "model.aux_classifier.")))}
    return state


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str, strict: bool = True) -> None:
    """Raise one SlimcvError listing missing/unexpected keys and shape differences."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if shapes:
        problems.append(f"{len(shapes)} shape difference(s) [{'; '.join(shapes[:4])}{' ...' if len(shapes) > 4 else ''}]")
    if strict and missing:
        problems.append(f"{len(missing)} missing key(s) [{', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}]")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) [{', '.join(unexpected[:4])}"
                        f"{' ...' if len(unexpected) > 4 else ''}]")
    if problems:
        raise SlimcvError(
            f"Weights in {source} do not fit this model: {'; '.join(problems)}. "
            "Check the model name, num_classes and width/depth options match the ones used for training."
        )


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Write the model's state_dict as safetensors, atomically."""
    from slimcv._io import atomic_write_safetensors

    return atomic_write_safetensors({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
