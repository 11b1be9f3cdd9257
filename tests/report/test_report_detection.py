"""A detector in bench and report: the network timed per runtime, box selection apart; mAP, PR curves, boxes."""
from __future__ import annotations

import json

import pytest

import slimcv


@pytest.fixture
def run(tiny_detector_run):
    return tiny_detector_run


def test_bench_times_the_detectors_network_and_its_box_selection_apart(run, tmp_path):
    report = slimcv.bench([str(run)], runtimes=["eager", "ort"], batch_sizes=[1], runs=3, warmup=1, memory=False,
                          quiet=True, out=tmp_path / "b.json")
    m = report.models[0]
    assert m.task == "detection" and {r.runtime for r in m.runtimes} == {"eager", "ort-fp32"}
    assert m.macs and m.macs > 0 and m.box_selection_ms is not None and m.box_selection_ms > 0
    assert json.loads((tmp_path / "b.json").read_text())["models"][0]["box_selection_ms"] == m.box_selection_ms


def test_report_shows_map_per_class_ap_pr_curves_and_boxes(run, tmp_path):
    result = slimcv.report([str(run)], out=tmp_path / "rep", images=2, quiet=True)
    assert {"pr", "per_class", "overlay_0000"} <= set(result.figures)
    html = result.html.read_text()
    assert "Precision and recall" in html and "Detection overlays" in html and "Per-class AP" in html
    summary = json.loads((run / "summary.json").read_text())["metrics"]
    assert result.entries[0].metric_name == "map" and result.entries[0].metric == summary["map"]
    assert set(result.entries[0].per_class) == {"circle", "rectangle", "triangle"}
