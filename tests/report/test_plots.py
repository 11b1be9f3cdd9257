"""The latency-budget search figure."""
from __future__ import annotations

import io

from slimcv.report.plots import search_figure


def _rows():
    return [{"key": "source/ort", "kind": "source", "label": "ort", "latency_ms": 40.0, "metric": 53.0},
            {"key": "source/openvino-int8", "kind": "source", "label": "openvino-int8", "latency_ms": 11.0,
             "metric": 52.8},
            {"key": "pruned_0.35/openvino-int8", "kind": "pruned", "label": "openvino-int8", "latency_ms": 5.5,
             "metric": 51.9},
            {"key": "unet-base_width4/ort", "kind": "student", "label": "ort", "latency_ms": 6.0, "metric": None}]


def test_search_figure_draws_the_trained_candidates_and_the_budget():
    from PIL import Image

    png = search_figure(_rows(), budget_ms=6.7, metric="miou", source_metric=53.0,
                        winner="pruned_0.35/openvino-int8", max_drop=2.0)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.width > 500 and img.height > 400
    pixels = img.convert("RGB").getdata()
    assert any(abs(r - 214) < 8 and abs(g - 39) < 8 and abs(b - 40) < 8 for r, g, b in pixels)  # budget line


def test_search_figure_without_a_trained_candidate_is_none():
    rows = [{**r, "metric": None} for r in _rows()]
    assert search_figure(rows, budget_ms=6.7, metric="miou") is None
