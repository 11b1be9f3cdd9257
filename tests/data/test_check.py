"""``check-data``: scan reports problems and class counts; median-frequency weights; the CLI command."""
from __future__ import annotations

import json

import numpy as np
import pytest
from torch.utils.data import Subset

from slimcv.cli import main
from slimcv.data import build_dataset
from slimcv.data.check import median_frequency_weights, scan
from slimcv.errors import SlimcvError


def _mask(counts: dict[int, int], h: int = 4, w: int = 6) -> np.ndarray:
    flat = np.concatenate([np.full(n, v, np.uint8) for v, n in counts.items()])
    assert flat.size == h * w
    return flat.reshape(h, w)


# Sample 0 and 2 are good; sample 1's image is corrupt. Class 11 is CamVid's void (ignored).
MASKS = [_mask({0: 20, 1: 3, 11: 1}), _mask({0: 24}), _mask({0: 18, 2: 4, 1: 2})]
GOOD_COUNTS = {0: 38, 1: 5, 2: 4}


@pytest.fixture
def tree(make_camvid):
    return make_camvid(MASKS)


@pytest.fixture
def broken_tree(tree):
    (tree / "train" / "s001.png").write_bytes(b"\x89PNG but not really")
    return tree


def test_scan_reports_one_problem_and_counts_good_samples(broken_tree):
    spec = f"camvid:{broken_tree}"
    r = scan(build_dataset(spec), spec, "train")
    assert r.task == "segmentation" and r.samples == 3
    assert len(r.problems) == 1 and "s001.png" in r.problems[0]
    assert r.sizes == {"6x4": 2}
    assert r.ignored == 1
    expected = {name: GOOD_COUNTS.get(i, 0) for i, name in enumerate(build_dataset(spec).info.class_names)}
    assert r.class_counts == expected
    assert r.class_weights is None


def test_scan_limit(tree):
    spec = f"camvid:{tree}"
    r = scan(build_dataset(spec), spec, "train", limit=1)
    assert r.samples == 1 and r.problems == []
    assert r.class_counts["Sky"] == 20 and r.class_counts["Building"] == 3 and r.ignored == 1


def test_median_frequency_weights_rank_rare_classes_higher(broken_tree):
    spec = f"camvid:{broken_tree}"
    w = scan(build_dataset(spec), spec, "train", weights=True).class_weights
    assert len(w) == 11
    # freq 38:5:4 over 47 pixels; median of the present classes is 5/47.
    assert w[:3] == pytest.approx([5 / 38, 1.0, 5 / 4], abs=1e-4)
    assert w[2] > w[1] > w[0] > 0
    assert w[3:] == [0.0] * 8  # absent classes get no weight


def test_median_frequency_weights_function_and_subset(tree):
    ds = build_dataset(f"camvid:{tree}")
    w_all = median_frequency_weights(ds, 11)
    # 62 px of class 0, 5 of class 1, 4 of class 2: median 5.
    assert w_all[:3] == pytest.approx([5 / 62, 1.0, 5 / 4], abs=1e-4)
    w_first = median_frequency_weights(Subset(ds, [0]), 11)  # only sample 0: 20 px class 0, 3 px class 1
    median = (20 + 3) / 2
    assert w_first[:3] == pytest.approx([median / 20, median / 3, 0.0], abs=1e-4)


def test_median_frequency_weights_need_labelled_pixels(make_camvid):
    root = make_camvid([np.full((4, 6), 11, np.uint8)])
    with pytest.raises(SlimcvError, match="No labelled pixels"):
        median_frequency_weights(build_dataset(f"camvid:{root}"), 11)


def test_scan_classification_counts_images():
    ds = build_dataset("synthetic-shapes:classification", length=12)
    r = scan(ds, "synthetic-shapes:classification", "train", weights=True)
    assert r.task == "classification" and r.samples == 12
    assert sum(r.class_counts.values()) == 12 and set(r.class_counts) == {"circle", "rectangle", "triangle"}
    assert r.sizes == {"64x64": 12} and r.class_weights is None


def test_cli_check_data_with_weights_and_json(broken_tree, tmp_path, capsys):
    out_file = tmp_path / "report" / "check.json"
    rc = main(["check-data", f"camvid:{broken_tree}", "--class-weights", "--out", str(out_file)])
    captured = capsys.readouterr()
    assert rc == 1  # problems found: a script can gate on the exit status
    assert "problems: 1" in captured.out and "s001.png" in captured.out
    assert "ignored pixels: 1" in captured.out
    assert "Sky" in captured.out
    report = json.loads(out_file.read_text())
    assert report["samples"] == 3 and len(report["problems"]) == 1
    assert report["class_counts"]["Sky"] == 38
    assert report["class_weights"][:3] == pytest.approx([5 / 38, 1.0, 5 / 4], abs=1e-4)


@pytest.mark.parametrize("spec, words", [
    ("camvd:x", ["camvid"]),
    ("camvid:/definitely/not/here", ["/definitely/not/here", "does not exist"]),
])
def test_cli_check_data_bad_spec(spec, words, capsys):
    rc = main(["check-data", spec])
    captured = capsys.readouterr()
    assert rc == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slimcv: error:")
    for word in words:
        assert word in lines[0]
    assert "Traceback" not in captured.err


@pytest.mark.parametrize("argv", [["--debug", "check-data", "camvd:x"], ["check-data", "camvd:x", "--debug"]])
def test_cli_debug_reraises_before_or_after_the_command(argv):
    # --debug is documented on the top-level parser; the sub-parser must not reset it to False.
    with pytest.raises(SlimcvError, match="camvid"):
        main(argv)


def test_scan_limit_takes_a_spread_not_the_first_files(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for c in ("ants", "bees", "cats"):  # sorted by class, as folders are
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(5):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / split / c / f"{i}.png")
    spec = f"imagefolder:{tmp_path}"
    r = scan(build_dataset(spec), spec, "train", limit=3)
    assert r.samples == 3 and r.class_counts == {"ants": 1, "bees": 1, "cats": 1}
