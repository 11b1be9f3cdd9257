"""INT8 quantization: static PTQ (ONNX Runtime, QDQ), dynamic, and QAT; ``slimcv.quantize(cfg)`` runs the stage."""
from __future__ import annotations

from slimcv.quantize.quantize import QuantizeConfig, QuantizeResult, calibration_set, quantize

__all__ = ["quantize", "QuantizeConfig", "QuantizeResult", "calibration_set"]
