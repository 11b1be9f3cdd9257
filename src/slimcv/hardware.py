"""What this machine's CPU can do: its feature flags and whether it computes bf16 natively (Linux /proc/cpuinfo)."""
from __future__ import annotations

import os
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
    """True when the CPU computes bf16 in hardware (AVX512-BF16 or AMX) and oneDNN may use it: bf16 is only faster
    there."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"}) and not isa_capped_below_bf16()


# oneDNN's instruction-set caps (ONEDNN_MAX_CPU_ISA) that still allow its bf16 kernels
_BF16_ISAS = {"ALL", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
              "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2"}


def isa_capped_below_bf16() -> bool:
    """True when ONEDNN_MAX_CPU_ISA (or its older name DNNL_MAX_CPU_ISA) holds oneDNN (PyTorch's and OpenVINO's
    CPU kernels) below its bf16 kernels, as set to avoid AMX or to behave like an older CPU: bf16 then fails to
    compile in OpenVINO or runs emulated."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    return bool(cap) and cap not in _BF16_ISAS


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
