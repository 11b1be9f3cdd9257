"""ONNX export with an ONNX Runtime agreement check: ``slimcv.export(source, out)``."""
from __future__ import annotations

from slimcv.export.onnx import ExportConfig, ExportResult, export, export_module, write_sidecar
from slimcv.export.verify import Agreement, compare

__all__ = ["export", "export_module", "ExportConfig", "ExportResult", "Agreement", "compare", "write_sidecar"]
