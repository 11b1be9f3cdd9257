import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slimcv.cli import main
from slimcv.errors import SlimcvError
from slimcv.report.collect import add_bench, collect
from slimcv.report.overlays import (colorize, error_map, fixed_indices, load_bundle, overlay_figure, predict,
                                    void_color)
from slimcv.report.plots import pareto_front
from slimcv.report.report import report


class _Page(HTMLParser):
    """Tables (header cells, row count), images, links and ids of an HTML page."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self.links, self.ids, self._cell = [], [], [], set(), None
        self.resources = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "table":
            self.tables.append({"headers": [], "rows": 0})
        elif tag == "th":
            self._cell = ""
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"] += 1
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "a":
            self.links.append(a.get("href", ""))
        if tag in ("script", "link", "iframe", "source", "video", "audio"):
            self.resources.append((tag, a))

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag == "th" and self._cell is not None:
            self.tables[-1]["headers"].append(self._cell.strip())
            self._cell = None


def _decode_png(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    assert im.format == "PNG" and im.width > 50 and im.height > 50
    return im


def test_html_is_self_contained_with_every_image_decodable(rendered):
    result, out = rendered
    page = _Page()
    page.feed(result.html.read_text())
    assert page.images, "no figures embedded"
    for src in page.images:
        assert src.startswith("data:image/png;base64,"), src[:60]
        _decode_png(base64.b64decode(src.split(",", 1)[1], validate=True))
    assert not page.resources  # no scripts, stylesheets or frames to fetch
    for href in page.links:  # only in-page anchors, each pointing at an element that exists
        assert href.startswith("#") and href[1:] in page.ids, href
    # pareto, per-class, confusion, curves and one overlay per validation image
    assert len(page.images) == 4 + 2 and set(result.figures) >= {"pareto", "per_class", "confusion", "curves"}


def test_comparison_table_lists_every_model_with_costs_and_runtimes(rendered, runs):
    result, _ = rendered
    page = _Page()
    page.feed(result.html.read_text())
    table = page.tables[0]
    for column in ("modelstage", "miou(%)", "Δ(pt)", "params(M)", "MACs(G)", "size(MiB)", "eager(ms)",
                   "ort-fp32(ms)", "ort-int8(ms)", "speed-up(fastest runtime)"):
        assert column in table["headers"], column
    names = [e.name for e in result.entries]
    # every row of quantize.json: a bf16 row where the CPU computes bf16 natively (AVX512-BF16/AMX), OpenVINO's
    # rows and NNCF's file where OpenVINO is installed
    quant = json.loads((runs["quantized"] / "quantize.json").read_text())
    rows = [f"quantized:{m['name']}" for m in quant["models"]]
    assert names == ["teacher", "student", "pruned", *rows]
    assert {"quantized:fp32_pytorch", "quantized:fp32", "quantized:int8_minmax"} <= set(rows)
    assert table["rows"] == 1 + len(names)
    per_class = page.tables[1]
    assert per_class["headers"] == ["class", *names] and per_class["rows"] == 1 + 4  # background + 3 shapes


def test_deltas_speedups_and_counts_come_from_the_runs(rendered, runs):
    result, out = rendered
    rows = {r["name"]: r for r in json.loads((out / "report.json").read_text())["rows"]}
    # the metrics of the weights each folder deploys: best.safetensors is the best epoch's
    teacher = json.loads((runs["teacher"] / "summary.json").read_text())["best"]["value"]
    student = json.loads((runs["student"] / "summary.json").read_text())["best"]["value"]
    assert rows["teacher"]["delta"] == 0 and rows["student"]["delta"] == pytest.approx(student - teacher)
    prune_after = json.loads((runs["pruned"] / "prune.json").read_text())["after"]
    assert rows["pruned"]["params_m"] * 1e6 == pytest.approx(prune_after["params"])
    assert rows["pruned"]["params_m"] < rows["teacher"]["params_m"]
    quant = json.loads((runs["quantized"] / "quantize.json").read_text())
    int8 = next(m for m in quant["models"] if m["name"] == "int8_minmax")
    assert rows["quantized:int8_minmax"]["size_mib"] * 2**20 == pytest.approx(int8["file_bytes"])
    assert rows["quantized:int8_minmax"]["latency"]["ort-int8"] == pytest.approx(int8["latency_ms"]["median"])
    # a speed-up only between latencies of one measurement: the report's own run timed the teacher and the
    # student; the pruned model and the quantize rows keep their stages' timings and get none against the teacher
    teacher_src = set(rows["teacher"]["latency_src"].values())
    base = min(v for v in rows["teacher"]["latency"].values() if v is not None)
    for name, r in rows.items():
        shared = [r["latency"][rt] for rt, src in r["latency_src"].items() if src in teacher_src]
        if shared:
            assert r["speedup"] == pytest.approx(base / min(shared)), name
        else:
            assert r["speedup"] is None, name
    assert rows["student"]["speedup"] is not None and rows["pruned"]["speedup"] is None


def test_markdown_summary_links_png_files_beside_it(rendered):
    result, out = rendered
    md = result.markdown.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == len(result.figures)
    for link in links:
        _decode_png((out / link).read_bytes())
    assert "| teacher | train |" in md and "## Commands and configs" in md


def test_confusion_from_predictions_matches_the_engine_metrics(runs):
    # the report's own pass over the validation split must reproduce what training's evaluate() recorded
    (teacher,) = collect([runs["teacher"]])
    bundle = load_bundle(teacher.data)
    pred = predict(teacher, bundle, fixed_indices(len(bundle.val), 2), confusion=True, threads=1)
    cm = pred.confusion
    acc = 100 * np.diag(cm) / np.clip(cm.sum(1), 1, None)
    for k, name in enumerate(bundle.info.class_names):
        assert acc[k] == pytest.approx(teacher.metrics["per_class_acc"][name], abs=1e-3)
    assert set(pred.masks) == {0, len(bundle.val) - 1}
    assert pred.masks[0].shape == bundle.val[0][1].shape


def test_collect_reads_each_stage(runs):
    teacher, pruned, *quant = collect([runs["teacher"], runs["pruned"], runs["quantized"]])
    assert (teacher.kind, teacher.task, teacher.metric_name) == ("train", "segmentation", "miou")
    assert len(teacher.curves) == 3 and teacher.command.startswith("slimcv train --config")
    assert teacher.params and teacher.macs and teacher.file_bytes
    assert pruned.kind == "prune" and pruned.command.startswith("slimcv prune")
    assert len(quant) >= 3 and {q.kind for q in quant} == {"quantize"}  # + a bf16 row on bf16 CPUs
    int8 = next(q for q in quant if q.name.endswith(":int8_minmax"))
    assert set(int8.latency) == {"ort-int8"} and int8.model_path.suffix == ".onnx"
    for q in quant:  # every file in every runtime that ran it, each with its own metric and latency
        assert q.metrics and len(q.latency) == 1, q.name
    assert int8.params == teacher.params and int8.macs == teacher.macs  # counted on the source run
    assert quant[0].latency and set(quant[0].latency) == {"eager"}


def test_collect_falls_back_to_the_training_log(runs, tmp_path):
    import shutil

    copy = tmp_path / "partial"
    shutil.copytree(runs["student"], copy)
    (copy / "summary.json").unlink()
    (entry,) = collect([copy])
    last = json.loads((copy / "metrics.jsonl").read_text().splitlines()[-1])["val"]
    assert entry.metric == pytest.approx(last["miou"])


def test_bench_json_fills_latencies(runs, tmp_path):
    from slimcv.bench.bench import bench

    bench([runs["student"]], runtimes=["eager"], batch_sizes=(1,), warmup=1, runs=3, threads=1, memory=False,
          out=tmp_path / "b.json", quiet=True)
    entries = collect([runs["teacher"], runs["student"]], count=False)
    assert add_bench(entries, tmp_path / "b.json") == 1
    assert not entries[0].latency and set(entries[1].latency) == {"eager"}


def test_pareto_front_keeps_only_undominated_points():
    pts = [(10, 50), (20, 60), (15, 40), (30, 60), (5, 20), (20, 55)]
    assert pareto_front(pts) == [4, 0, 1]  # by cost; (30, 60) ties on score but costs more


def test_overlay_colours_are_the_dataset_palette():
    palette = ((0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200))
    truth = np.zeros((60, 80), np.int64)
    truth[10:30, 10:40], truth[35:55, 45:75], truth[:5] = 1, 2, 255
    pred = truth.copy()
    pred[35:55, 45:75] = 3
    rgb = colorize(truth, palette, 255)
    # class 0 is black here, so void pixels take white instead of the usual black
    assert void_color(palette) == (255, 255, 255) and void_color(palette[1:]) == (0, 0, 0)
    assert (rgb[15, 15] == palette[1]).all() and (rgb[40, 50] == palette[2]).all() and (rgb[0, 0] == 255).all()
    err = error_map(np.full((60, 80, 3), 200, np.uint8), truth, pred, 255)
    assert (err[40, 50] == (255, 32, 32)).all() and (err[0, 0] == 0).all() and (err[15, 15] != (255, 32, 32)).any()
    png = overlay_figure(np.full((60, 80, 3), 128, np.uint8), truth, {"model": pred}, ("bg", "circle", "rect", "tri"),
                         palette, 255, "test")
    pixels = {tuple(p) for p in np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)}
    for colour in palette[1:]:  # every class drawn (and its legend patch) in exactly the palette colour
        assert colour in pixels


def test_report_errors_name_the_problem(runs, tmp_path):
    with pytest.raises(SlimcvError, match="is not a folder"):
        report([tmp_path / "nope"], out=tmp_path / "r", quiet=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SlimcvError, match="is it a slimcv run folder"):
        report([tmp_path / "empty"], out=tmp_path / "r", quiet=True)
    with pytest.raises(SlimcvError, match="Baseline 'x' is not among"):
        report([runs["teacher"]], out=tmp_path / "r", baseline="x", predict=False, quiet=True)


def test_cli_report_and_bench(runs, tmp_path, capsys):
    assert main(["report", str(runs["teacher"]), str(runs["student"]), "-o", str(tmp_path / "rep"), "--no-predict",
                 "--baseline", "student"]) == 0
    assert (tmp_path / "rep" / "report.html").is_file() and (tmp_path / "rep" / "report.md").is_file()
    rows = json.loads((tmp_path / "rep" / "report.json").read_text())["rows"]
    assert [r["is_baseline"] for r in rows] == [False, True]
    onnx = runs["quantized"] / "model_int8_minmax.onnx"
    assert main(["bench", str(onnx), "--runs", "3", "--warmup", "1", "--threads", "1", "--batch-sizes", "1",
                 "--no-memory", "--out", str(tmp_path / "b.json")]) == 0
    assert "bench: 1 threads" in capsys.readouterr().out
    saved = json.loads((tmp_path / "b.json").read_text())["models"][0]
    assert saved["precision"] == "int8" and saved["runtimes"][0]["runtime"] == "ort-int8"
    assert saved["input_shape"] == [3, 32, 32]  # dynamic H/W resolved from the sidecar's source run


def test_figures_dir_holds_what_the_page_shows(rendered):
    result, out = rendered
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(f"{k}.png" for k in result.figures)
    assert all(Path(p).is_file() for p in result.figures.values())
