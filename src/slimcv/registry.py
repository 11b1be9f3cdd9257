"""One small registry used for models, datasets, KD losses and pruning importance criteria."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from slimcv.errors import SlimcvError, close_matches

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """Maps user-facing names to callables; duplicate names raise, unknown names list close matches."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str | None = None, **meta: Any) -> Callable[[T], T]:
        """Decorator: register ``fn`` under ``name`` (default: its ``__name__``) with optional metadata."""

        def deco(fn: T) -> T:
            key = name or fn.__name__
            if key in self._items:
                raise SlimcvError(f"A {self.kind} named {key!r} is already registered; pick another name.")
            self._items[key] = fn
            self._meta[key] = dict(meta)
            return fn

        return deco

    def get(self, name: str) -> T:
        """Return the callable registered as ``name`` or raise a SlimcvError with suggestions."""
        try:
            return self._items[name]
        except KeyError:
            listing = (f"Run `slimcv {self.kind}s` or see list_{self.kind}s() for the {len(self._items)} valid names."
                       if self.kind in ("model", "dataset") else f"Valid names: {', '.join(self._items)}.")
            raise SlimcvError(f"Unknown {self.kind} {name!r}.{close_matches(name, self._items)} {listing}") from None

    def meta(self, name: str) -> dict[str, Any]:
        """Metadata given at registration (e.g. the task of a model)."""
        self.get(name)
        return self._meta[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
