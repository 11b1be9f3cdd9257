"""Runtime names live in the runtime table: no other module spells one (a renamed runtime is one edit)."""
from __future__ import annotations

import ast
from pathlib import Path

from slimcv.deploy import runtimes

SRC = Path(__file__).resolve().parents[2] / "src" / "slimcv"
NAMES = set(runtimes.TABLE) | {runtimes.row_name(n, p) for n, rt in runtimes.TABLE.items() for p in ("fp32", "int8")
                               if rt.precision is None} | {"int8_nncf_openvino", "fp32_pytorch", "bf16_pytorch"}
# literals equal to a runtime name that are not runtimes: (file, literal) -> why
NOT_RUNTIMES = {
    ("cli.py", "onnxruntime"): "a package whose version --version prints",
    ("cli.py", "openvino"): "a package whose version --version prints",
    ("quantize/nncf_ptq.py", "openvino"): "a package that must be importable",
    ("bench/bench.py", "onnxruntime"): "the library version recorded in bench.json",
    ("quantize/quantize.py", "eager"): "QuantizeConfig's field that turns PyTorch rows off",
    ("cli_flags.py", "eager"): "QuantizeConfig's field that turns PyTorch rows off",
}
OWNERS = {"deploy/runtimes.py", "quantize/quantize.py:int8_nncf_openvino"}


def test_no_module_but_the_runtime_table_spells_a_runtime_name():
    found = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel == "deploy/runtimes.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in NAMES and (rel, node.value) not in NOT_RUNTIMES:
                found.append(f"{rel}:{node.lineno} {node.value!r}")
    assert not found, found
