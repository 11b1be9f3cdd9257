"""Cost of a model: parameters, MACs, file size, latency per runtime, throughput and peak memory."""
from __future__ import annotations

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    """Makes ``slimcv.bench(...)`` work once this subpackage is imported and shadows the lazy function."""

    def __call__(self, *args: Any, **kwargs: Any):
        from slimcv.bench.bench import bench

        return bench(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
