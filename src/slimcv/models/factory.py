"""A user's own model builder named by import path, ``package.module:factory`` (an explicit opt-in: it runs
that module's code)."""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from torch import nn

from slimcv.errors import SlimcvError
from slimcv.trust import GIVEN as _GIVEN, trusting


def is_factory(name: str) -> bool:
    """True for ``package.module:attr`` (an import path), not for ``timm:NAME`` / ``smp:ARCH:ENCODER``."""
    module, sep, attr = name.partition(":")
    return bool(sep) and module not in ("timm", "smp") and bool(attr) and all(
        part.isidentifier() for part in module.split(".")) and all(p.isidentifier() for p in attr.split("."))


def check_trusted(name: str, source: str | Path) -> None:
    """Refuse, before importing anything, a factory that a file names and the user did not opt in for."""
    if trusting() or name in _GIVEN:
        return
    module_name = name.partition(":")[0]
    raise SlimcvError(f"{source} names code to run, {name!r} (module {module_name!r}), to rebuild its model; slimcv "
                      "runs code a file names only when you trust it: pass --trust-remote-code (Python: "
                      "slimcv.load(folder, trust_remote_code=True), or model=YourClass).")


def import_factory(name: str, *, from_file: bool = False):
    """The callable ``package.module:attr`` names (imports that module: user code, by explicit opt-in)."""
    module_name, _, attr = name.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise SlimcvError(f"Unknown model {name!r}: it is no registered name (see `slimcv models`), and as a "
                          f"factory package.module:function its module {module_name!r} cannot be imported ({e}); "
                          "make that module importable (install it, or add its folder to PYTHONPATH).") from e
    except Exception as e:  # the user's module itself fails on import (a syntax error, its own exception)
        where = f" ({e.filename}, line {e.lineno})" if isinstance(e, SyntaxError) and e.filename else ""
        raise SlimcvError(f"Importing {module_name!r} for model {name!r} failed in that module's own code: "
                          f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}{where}; fix it "
                          "there.") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise SlimcvError(f"Module {module_name!r} has no {attr!r} for model {name!r}; check the name after ':'.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise SlimcvError(f"{name} is not callable; point --model at a class or a function that returns a module.")
    if from_file and not ((inspect.isclass(obj) and issubclass(obj, nn.Module)) or inspect.isfunction(obj)):
        raise SlimcvError(f"{name} is neither an nn.Module class nor a Python function, so slimcv will not call it "
                          "to rebuild a model; check the model.json it came from.")
    return obj


def build_factory(name: str, num_classes: int | None, *, from_file: str | Path | None = None,
                  **kwargs: Any) -> nn.Module:
    """Call a user's factory; ``num_classes`` is passed when its signature takes it. ``from_file`` is the file
    that named it (then the user must have opted in)."""
    if from_file is not None:
        check_trusted(name, from_file)
    fn = import_factory(name, from_file=from_file is not None)
    if from_file is None:
        _GIVEN.add(name)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    if num_classes is not None and ("num_classes" in params or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())) and "num_classes" not in kwargs:
        kwargs["num_classes"] = num_classes
    try:
        inspect.signature(fn).bind(**kwargs)
    except TypeError as e:  # the arguments slimcv passes do not fit the signature: the user's settings to fix
        raise SlimcvError(f"Calling {name}({', '.join(kwargs)}) does not fit its signature ({e}); give its "
                          "arguments as model_kwargs (in Python, or a recipe's model_kwargs).") from e
    except ValueError:  # no signature to check (a builtin): call it and see
        pass
    try:
        model = fn(**kwargs)
    except Exception as e:  # raised inside the user's own constructor: theirs to fix, said as theirs
        raise SlimcvError(f"{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) raised "
                          f"{type(e).__name__} in its own code: {str(e).splitlines()[0][:200] if str(e) else ''}; "
                          "fix it there.") from e
    if not isinstance(model, nn.Module):
        raise SlimcvError(f"{name} returned a {type(model).__name__}, not a torch.nn.Module.")
    return model
