"""What this machine's CPU can do: its feature flags and whether it computes bf16 natively (Linux /proc/cpuinfo)."""
from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path
from typing import Any


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16() -> bool:
    """True when the CPU computes bf16 in hardware (AVX512-BF16 or AMX): bf16 is only faster there."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


# the flags that decide which precision and runtime is fastest; recorded beside every measured figure
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_int8", "amx_bf16")


def cpu_features() -> dict[str, Any]:
    """The CPU's name and the instruction sets that decide INT8 and bf16 speed (empty flags off Linux)."""
    info: dict[str, Any] = {"machine": platform.machine(), "model": platform.processor() or None}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    first = text.split("\n\n", 1)[0].splitlines()
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in first if ":" in line)}
    flags = set(fields.get("flags", "").split())
    info["model"] = fields.get("model name") or info["model"]
    info.update({"avx2": "avx2" in flags, "avx512": "avx512f" in flags,
                 "vnni": bool(flags & {"avx512_vnni", "avx_vnni"}), "amx": "amx_int8" in flags,
                 "bf16": bool(flags & {"avx512_bf16", "amx_bf16"}),
                 "flags": sorted(flags & set(SPEED_FLAGS))})
    return info
