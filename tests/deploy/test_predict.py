"""`slimcv predict` and the predictor's batch, probability and colour helpers, on tiny exported models."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slimcv import deploy
from slimcv.cli import main
from slimcv.deploy.batch import expand_inputs, predict_files
from slimcv.deploy.visual import colorize, default_palette, overlay
from slimcv.errors import SlimcvError
from tests.deploy.models import SEG, exported as _exported


def _folder(tmp: Path, images: list[np.ndarray]) -> Path:
    folder = tmp / "images"
    (folder / "sub").mkdir(parents=True)
    for i, im in enumerate(images[:-1]):
        Image.fromarray(im).save(folder / f"{i}.png")
    Image.fromarray(images[-1]).resize((50, 30)).save(folder / "sub" / "odd.png")  # another size: its own batch
    return folder


def test_predict_writes_the_predictors_masks_and_overlays_for_a_folder(seg, tmp_path):
    path, images = seg
    folder = _folder(tmp_path, images)
    (folder / "notes.txt").write_text("not an image, not picked up")
    assert main(["predict", str(path), str(folder), "-o", str(tmp_path / "out"), "-b", "2"]) == 0
    predictor = deploy.load(path)
    records = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert sorted(r["name"] for r in records) == ["0.png", "1.png", "2.png", "3.png", "4.png", "sub/odd.png"]
    for r in records:
        source = np.asarray(Image.open(r["path"]).convert("RGB"))
        mask = np.asarray(Image.open(tmp_path / "out" / r["mask"]))
        np.testing.assert_array_equal(mask, predictor(source).mask)
        over = np.asarray(Image.open(tmp_path / "out" / r["overlay"]))
        assert over.shape == source.shape
        assert abs(sum(r["classes"].values()) - 1) < 1e-3
    summary = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert summary["images"] == 6 and summary["skipped"] == [] and summary["task"] == "segmentation"


def test_predict_classification_writes_labels_with_topk(cls, tmp_path):
    path, images = cls
    folder = _folder(tmp_path, images)
    result = predict_files(path, [folder], tmp_path / "out", topk=2, batch_size=4, progress=False)
    predictor = deploy.load(path)
    rows = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))
    assert len(rows) == len(result.records) == 6
    for row, record in zip(rows, result.records):
        p = predictor(np.asarray(Image.open(row["path"]).convert("RGB")))
        assert int(row["label"]) == p.label and row["class"] == p.name
        assert [t["label"] for t in record["topk"]] == list(np.argsort(-p.probs, kind="stable")[:2])
        assert record["topk"][0]["score"] >= record["topk"][1]["score"]
        assert abs(float(row["score"]) - p.probs.max()) < 1e-5


def test_a_corrupt_image_is_skipped_and_named_with_exit_1(seg, tmp_path, capsys):
    path, images = seg
    folder = _folder(tmp_path, images)
    (folder / "broken.png").write_bytes(b"not a png")
    assert main(["predict", str(path), str(folder), "-o", str(tmp_path / "out")]) == 1
    assert "broken.png" in capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert summary["images"] == 6 and [Path(s["path"]).name for s in summary["skipped"]] == ["broken.png"]


def test_inputs_as_files_and_globs_never_share_an_output_name(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / d / "x.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "x.jpg")
    found = expand_inputs([tmp_path / "a" / "x.png", str(tmp_path / "b" / "*.png"), tmp_path / "a" / "x.jpg"])
    assert [name for _, name in found] == ["x.png", "x_1.png", "x_2.jpg"]
    with pytest.raises(SlimcvError, match="No image matches"):
        expand_inputs([str(tmp_path / "*.tif")])
    with pytest.raises(SlimcvError, match="holds no images"):
        (tmp_path / "empty").mkdir()
        expand_inputs([tmp_path / "empty"])


def test_predict_refuses_an_output_folder_it_did_not_write(seg, tmp_path, capsys):
    path, images = seg
    folder = _folder(tmp_path, images)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    assert main(["predict", str(path), str(folder), "-o", str(mine)]) == 2
    assert "did not write" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]
    # files named like slimcv's records, written by someone else (a web app's manifest), make no folder slimcv's
    (mine / "manifest.json").write_text('{"name": "my app", "start_url": "/"}')
    (mine / "predict.json").write_text('{"items": []}')
    assert main(["predict", str(path), str(folder), "-o", str(mine)]) == 2
    assert sorted(p.name for p in mine.iterdir()) == ["manifest.json", "predict.json", "thesis.tex"]
    # its own earlier output is replaced
    assert main(["predict", str(path), str(folder), "-o", str(tmp_path / "out")]) == 0
    assert main(["predict", str(path), str(folder / "0.png"), "-o", str(tmp_path / "out")]) == 0
    assert len(json.loads((tmp_path / "out" / "predictions.json").read_text())) == 1


def test_predict_runs_without_torch(seg, tmp_path):
    path, images = seg
    folder = _folder(tmp_path, images)
    code = ("import sys; from slimcv.cli import main; rc = main(sys.argv[1:]); "
            "assert not [m for m in sys.modules if m.split('.')[0] == 'torch'], 'torch imported'; sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, "predict", str(path), str(folder), "-o", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "o" / "masks").rglob("*.png"))) == 6


def test_batched_predictions_equal_one_at_a_time_also_for_a_fixed_batch_file(seg, tmp_path):
    path, images = seg
    predictor = deploy.load(path)
    one = [predictor(im).mask for im in images]
    batched = predictor.predict_batch(images, batch_size=4)
    for a, b in zip(one, batched):
        np.testing.assert_array_equal(a, b.mask)
    fixed, _ = _exported(tmp_path, SEG, "unet", batch=2)
    fixed_predictor = deploy.load(fixed)
    assert fixed_predictor.fixed_batch == 2
    odd = fixed_predictor.predict_batch(images[:3], batch_size=8)  # 3 images through a batch-2 file
    for a, b in zip(one, odd):
        np.testing.assert_array_equal(a, b.mask)


def test_segmentation_probabilities_on_request(seg):
    path, images = seg
    predictor = deploy.load(path)
    assert predictor(images[0]).probs is None
    p = predictor(images[0], probs=True)
    assert p.probs.shape == (len(predictor.class_names), *images[0].shape[:2])
    np.testing.assert_allclose(p.probs.sum(0), 1, atol=1e-5)
    np.testing.assert_array_equal(p.probs.argmax(0), p.mask)
    with pytest.raises(SlimcvError, match="classification"):
        p.topk(3)


def test_colors_travel_with_the_artifact(seg, tmp_path):
    path, images = seg
    predictor = deploy.load(path)
    meta = json.loads(Path(str(path) + ".json").read_text())
    assert predictor.palette == [tuple(c) for c in meta["palette"]]
    mask = predictor(images[0]).mask
    rgb = predictor.colorize(mask)
    for c in np.unique(mask):
        assert (rgb[mask == c] == predictor.palette[c]).all()
    blended = predictor.overlay(images[0], mask, alpha=1.0)
    np.testing.assert_array_equal(blended, rgb)
    np.testing.assert_array_equal(predictor.overlay(images[0], mask, alpha=0.0), images[0])
    # a model whose data had no palette gets distinct default colours, one per class
    del meta["palette"]
    Path(str(path) + ".json").write_text(json.dumps(meta))
    try:
        assert deploy.load(path).palette == default_palette(len(meta["class_names"]))
    finally:
        meta["palette"] = [list(c) for c in predictor.palette]
        Path(str(path) + ".json").write_text(json.dumps(meta))


def test_default_palette_is_distinct_and_keeps_clear_of_the_error_red():
    from slimcv.report.overlays import ERROR_RGB

    colors = np.asarray(default_palette(40), float)
    assert len({tuple(c) for c in colors.astype(int)}) == 40
    assert np.abs(colors - np.asarray(ERROR_RGB)).sum(1).min() > 60
    mask = np.array([[0, 1], [2, 255]])
    rgb = colorize(mask)
    assert (rgb[0, 1] != rgb[1, 0]).any() and tuple(rgb[1, 1]) != tuple(rgb[0, 0])  # void differs from class 0
    assert overlay(np.zeros((4, 4, 3), np.uint8), np.ones((2, 2), np.uint8), alpha=1.0).shape == (4, 4, 3)


def test_two_predict_runs_into_one_folder_never_leave_a_broken_record(seg, tmp_path):
    """Run at the same time, one succeeds and the other refuses; the record lists masks that exist."""
    import json
    import subprocess
    import sys

    path, images = seg
    folder = _folder(tmp_path, images)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "slimcv.cli", "predict", str(path), str(folder), "-o", str(out)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 2]), results
    if codes == [0, 2]:
        assert "Another slimcv process is writing" in next(err for code, err in results if code == 2)
    record = json.loads((out / "predictions.json").read_text())
    masks = [r["mask"] for r in record if r.get("mask")]
    assert masks and all((out / m).is_file() for m in masks)


def test_an_output_folder_inside_the_input_folder_is_not_read_back(seg, tmp_path):
    from slimcv.deploy.batch import predict_files

    path, images = seg
    folder = _folder(tmp_path, images)
    first = predict_files(path, [folder], folder / "pred", progress=False)
    again = predict_files(path, [folder], folder / "pred", progress=False)
    assert len(again.records) == len(first.records) == len(images)
