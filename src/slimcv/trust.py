"""The user's opt-in for running code that a file names (``trust_remote_code``), kept free of torch imports.

Code named by a file (a model folder's model.json) runs only when the user opts in for that load: the CLI's
``--trust-remote-code``, or :func:`trust_remote_code` / ``slimcv.load(..., trust_remote_code=True)`` in Python.
A factory the user names directly in this process (a --model flag, a Python argument) is their own opt-in, so
folders this process wrote with it reload without the switch.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

_TRUST_ALL: contextvars.ContextVar[bool] = contextvars.ContextVar("slimcv_trust_remote_code", default=False)
GIVEN: set[str] = set()  # factories named directly by the user in this process


@contextlib.contextmanager
def trust_remote_code(enabled: bool = True) -> Iterator[None]:
    """Within this block, model folders may name a ``package.module:factory`` that slimcv imports and calls."""
    token = _TRUST_ALL.set(enabled)
    try:
        yield
    finally:
        _TRUST_ALL.reset(token)


def trusting() -> bool:
    """True inside :func:`trust_remote_code`."""
    return _TRUST_ALL.get()
