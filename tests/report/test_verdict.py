"""The verdict: each sentence follows the run files (distillation against its control, pruning, INT8, compress)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from slimcv.report.collect import collect
from slimcv.report.report import report
from slimcv.report.verdict import same_measurement_speedup, verdict
from tests.report.conftest import DATA


@pytest.fixture(scope="module")
def distilled(runs, tmp_path_factory) -> dict[str, Path]:
    """A student distilled from the teacher and the same student trained alone (the control)."""
    from slimcv.distill.distill import distill
    from slimcv.engine.train import train

    root = tmp_path_factory.mktemp("kd")
    student = {"model": "unet_small", "model_kwargs": {"base_width": 4, "depth": 2}, "data": DATA, "epochs": 1,
               "optim": {"lr": 0.01}, "progress": False, "tensorboard": False, "threads": 1}
    train({**student, "out_dir": str(root / "alone")})
    distill({**student, "teacher": str(runs["teacher"]), "out_dir": str(root / "kd")})
    return {"alone": root / "alone", "kd": root / "kd"}


def _set_metric(folder: Path, value: float) -> None:
    """Every record of the run says ``value``: the summary, its best epoch and the training log."""
    summary = json.loads((folder / "summary.json").read_text())
    summary["metrics"]["miou"] = summary["best"]["value"] = value
    (folder / "summary.json").write_text(json.dumps(summary))
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    for r in lines:
        if "val" in r:
            r["val"]["miou"] = value
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


@pytest.mark.parametrize("kd_minus_alone", [-2.1, 1.5])
def test_distillation_is_judged_against_the_student_trained_alone(runs, distilled, tmp_path, kd_minus_alone):
    alone, kd = tmp_path / "alone", tmp_path / "kd"
    shutil.copytree(distilled["alone"], alone)
    shutil.copytree(distilled["kd"], kd)
    _set_metric(alone, 40.0)
    _set_metric(kd, 40.0 + kd_minus_alone)
    entries = collect([runs["teacher"], alone, kd])
    (s,) = [s for s in verdict(entries, entries[0]) if s.kind == "distill"]
    assert f"{kd_minus_alone:+.2f} pt" in s.text and "alone" in s.text
    if kd_minus_alone < 0:
        assert s.good is False and s.text.startswith("Distillation did not help")
    else:
        assert s.good is True and s.text.startswith("Distillation helped")
    page = report([runs["teacher"], alone, kd], out=tmp_path / "r", predict=False, quiet=True)
    html = page.html.read_text()
    assert 'id="verdict"' in html and s.text.split(":")[0] in html
    assert html.index('id="verdict"') < html.index('id="comparison"')  # the verdict comes first
    assert s.text in page.markdown.read_text()
    assert json.loads((tmp_path / "r" / "report.json").read_text())["verdict"][1]["kind"] in ("distill", "prune")


def test_no_control_no_distillation_sentence(runs, distilled):
    entries = collect([runs["teacher"], distilled["kd"]])
    assert not [s for s in verdict(entries, entries[0]) if s.kind == "distill"]


def test_pruning_and_quantize_sentences_follow_their_files(runs):
    entries = collect([runs["teacher"], runs["pruned"], runs["quantized"]])
    statements = {s.kind: s for s in verdict(entries, entries[0])}
    prune = json.loads((runs["pruned"] / "prune.json").read_text())
    assert f"{prune['before']['macs'] / prune['after']['macs']:.2f}x fewer MACs" in statements["prune"].text
    drop = prune["after"]["miou"] - prune["before"]["miou"]
    assert f"{drop:+.2f} pt miou" in statements["prune"].text
    quant = json.loads((runs["quantized"] / "quantize.json").read_text())
    assert quant["recommendation"]["name"] in statements["quantize"].text
    assert quant["recommendation"]["why"] in statements["quantize"].text


def test_speedups_only_within_one_measurement(runs):
    teacher, pruned = collect([runs["teacher"], runs["pruned"]])
    teacher.latency["eager"] = {"median": 10.0, "from": "run A", "threads": 1}
    pruned.latency["eager"] = {"median": 2.0, "from": "prune stage", "threads": 1}
    assert same_measurement_speedup(teacher, pruned) is None
    pruned.latency["ort-fp32"] = {"median": 4.0, "from": "run A", "threads": 1}
    teacher.latency["ort-fp32"] = {"median": 8.0, "from": "run A", "threads": 1}
    assert same_measurement_speedup(teacher, pruned) == (2.0, "ort-fp32")  # the teacher's fastest in run A: 8 ms
    best = next(s for s in verdict([teacher, pruned], teacher, max_drop=100) if s.kind == "best")
    assert "2.00x faster (ort-fp32)" in best.text


def test_the_compress_outcome_is_stated(runs, tmp_path):
    from slimcv.pipeline.compress import write_outcome

    for name in ("teacher", "pruned"):
        shutil.copytree(runs[name], tmp_path / name)
    from slimcv.pipeline import search as S
    from slimcv.pipeline.budget import BudgetResult

    plan = {"target": "speedup", "label": "4x the speed of the source in ONNX Runtime FP32", "max_drop": 1.0}
    closest = S.Candidate("pruned", kind="pruned", params=1, macs=1, latency_ms=4.0, speedup=2.5, meets=True,
                          metric=48.6)
    write_outcome(tmp_path, plan, BudgetResult(None, tmp_path / "pruned", [closest], 10.0, 2.5, 1.0,
                                               source_metric=50.0, closest=closest, max_drop=1.0))
    entries = collect([tmp_path / "teacher", tmp_path / "pruned"])
    (s,) = [s for s in verdict(entries, entries[0]) if s.kind == "compress"]
    assert s.good is False and s.text.startswith("Target 4x the speed of the source in ONNX Runtime FP32: not met")
    assert "2.50x with pruned in ort-fp32" in s.text and "-1.40 pt" in s.text and "the closest" in s.text


def test_a_model_keeps_its_colour_across_reports(runs):
    from slimcv.report.plots import entry_colors

    one = collect([runs["teacher"], runs["student"]], count=False)
    two = collect([runs["pruned"], runs["student"], runs["teacher"]], count=False)
    a, b = entry_colors(one), entry_colors(two)
    assert a["teacher"] == b["teacher"] and a["student"] == b["student"]
    assert len(set(b.values())) == len(b)  # distinct within a report


def test_rows_of_one_quantize_folder_say_which_file_runs_where(runs, rendered):
    result, _ = rendered
    hows = {e.name: e.how for e in result.entries if e.kind == "quantize"}
    assert hows["quantized:fp32_pytorch"] == "the model itself in PyTorch"
    assert hows["quantized:fp32"] == "FP32 file in ONNX Runtime" and hows["quantized:int8_minmax"] == \
        "INT8 file in ONNX Runtime"
    html = result.html.read_text()
    assert "FP32 file in ONNX Runtime" in html and "the model itself in PyTorch" in html


def test_fine_tuning_curves_get_their_own_row(runs):
    import io

    from PIL import Image

    from slimcv.report.plots import curves_figure, entry_colors

    teacher, pruned = collect([runs["teacher"], runs["pruned"]], count=False)
    pruned.curves = pruned.curves or teacher.curves[:2]  # as a pruned model fine-tuned for two epochs logs them
    colors = entry_colors([teacher, pruned])
    one = Image.open(io.BytesIO(curves_figure([teacher], colors)))
    two = Image.open(io.BytesIO(curves_figure([teacher, pruned], colors)))
    assert two.height > 1.7 * one.height  # training on one row, the pruned model's fine-tuning on another


def test_points_that_coincide_in_a_plot_are_set_apart():
    from slimcv.report.plots import _spread

    shifts = _spread([(10.0, 50.0), (10.0, 50.0), (20.0, 40.0), (10.00001, 50.0)])
    assert shifts[2] == 0.0  # alone
    together = sorted([shifts[0], shifts[1], shifts[3]])
    assert len(set(together)) == 3 and abs(sum(together)) < 1e-9  # three distinct offsets around the true place


def test_frontier_labels_overlap_neither_each_other_nor_the_markers():
    import matplotlib.pyplot as plt

    from slimcv.report.plots import _label_points

    fig, ax = plt.subplots(figsize=(6, 4))
    # two pairs of frontier points sharing a place (a pruned model and its FP32 file), as on the size panel
    pts = [(0.037, 20.39), (0.0371, 20.39), (0.09, 20.39), (1.9, 21.94), (1.9001, 21.94), (0.5, 21.0)]
    ax.scatter(*zip(*pts))
    ax.set_xscale("log")
    ax.margins(x=0.12, y=0.1)
    labels = ["quantize:int8_minmax", "quantize:int8_minmax_openvino", "prune", "teacher", "teacher (ort)",
              "distill"]
    drawn = _label_points(ax, pts, labels)
    renderer = fig.canvas.get_renderer()
    boxes = [a.get_window_extent(renderer) for a in drawn]
    assert len(boxes) == len(labels)
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (drawn[i].get_text(), drawn[j].get_text())
    centres = ax.transData.transform(pts)
    for box in boxes:
        assert not any(box.contains(x, y) for x, y in centres)
    plt.close(fig)


def test_every_runtime_row_of_the_table_has_its_own_marker():
    from slimcv.deploy import runtimes
    from slimcv.report.plots import RUNTIME_MARKERS

    labels = {runtimes.row_name(rt, p) for rt in runtimes.TABLE for p in ("fp32", "int8")}
    assert labels <= set(RUNTIME_MARKERS), labels - set(RUNTIME_MARKERS)
    assert len(set(RUNTIME_MARKERS.values())) == len(RUNTIME_MARKERS) and "*" not in RUNTIME_MARKERS.values()


def test_the_error_colour_never_reads_as_a_class():
    import numpy as np

    from slimcv.report.overlays import ERROR_RGB, error_color

    assert error_color([(0, 0, 0), (60, 180, 75)]) == ERROR_RGB
    reddish = [(250, 30, 40), (0, 0, 0), (128, 64, 128)]
    chosen = error_color(reddish)
    assert chosen != ERROR_RGB and np.abs(np.asarray(reddish) - chosen).sum(1).min() >= 120


def test_a_folder_is_scored_by_the_weights_it_deploys(runs, tmp_path):
    teacher = tmp_path / "teacher"
    shutil.copytree(runs["teacher"], teacher)
    summary = json.loads((teacher / "summary.json").read_text())
    lines = [json.loads(line) for line in (teacher / "metrics.jsonl").read_text().splitlines()]
    best_epoch = summary["best"]["epoch"]
    for r in lines:  # make the best epoch stand out from the last one
        r["val"]["miou"] = 90.0 if r["epoch"] == best_epoch else 10.0
    (teacher / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (entry,) = collect([teacher], count=False)
    assert entry.metric == 90.0  # best.safetensors holds the best epoch's weights
    (teacher / "best.safetensors").unlink()
    (entry,) = collect([teacher], count=False)
    assert entry.metric == summary["metrics"]["miou"]  # no best weights: the last epoch's, as summary.json says
