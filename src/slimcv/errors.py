"""The one exception type slimcv raises to its users."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class SlimcvError(Exception):
    """A user-facing error: the message says what is wrong and how to fix it."""


def close_matches(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Format a 'did you mean' hint for an unknown name."""
    matches = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" Did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""
