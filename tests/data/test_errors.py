"""Bad inputs: every failure is a SlimcvError whose message names the file or value at fault."""
from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from slimcv.data import build_dataset, load_data, parse_spec
from slimcv.errors import SlimcvError


def mask(h: int = 4, w: int = 6, value: int = 0) -> np.ndarray:
    m = np.full((h, w), value, np.uint8)
    m[0, 0] = 1
    return m


def test_well_formed_tree_loads(make_camvid):
    # The trees below break one thing each; this one, broken in nothing, must load.
    root = make_camvid([mask(), mask(value=10)])
    ds = build_dataset(f"camvid:{root}")
    assert len(ds) == 2
    image, target = ds.load(1)
    assert image.shape == (3, 4, 6) and int(target[1, 1]) == 10


def test_camvid_void_11_becomes_ignore(make_camvid):
    root = make_camvid([mask(value=11)])
    _, target = build_dataset(f"camvid:{root}").load(0)
    assert int(target[0, 0]) == 1 and int(target[2, 2]) == 255


def test_missing_image_file_is_named(make_camvid):
    root = make_camvid([mask()])
    (root / "train" / "s000.png").unlink()
    ds = build_dataset(f"camvid:{root}")
    with pytest.raises(SlimcvError, match=r"s000\.png does not exist"):
        ds[0]


def test_missing_mask_file_is_named(make_camvid):
    root = make_camvid([mask()])
    (root / "trainannot" / "s000.png").unlink()
    with pytest.raises(SlimcvError, match=r"Mask file .*trainannot.s000\.png does not exist"):
        build_dataset(f"camvid:{root}").load(0)


def test_corrupt_image_is_named(make_camvid):
    root = make_camvid([mask()])
    (root / "train" / "s000.png").write_bytes(b"this is not a png \x00\x01\x02" * 10)
    with pytest.raises(SlimcvError, match=r"Cannot read image .*s000\.png.*corrupt"):
        build_dataset(f"camvid:{root}")[0]


def test_truncated_image_is_named(make_camvid, files):
    root = make_camvid([mask(32, 32)])
    path = root / "train" / "s000.png"
    files.rgb(path, files.random_image(32, 32))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(SlimcvError, match=r"s000\.png"):
        build_dataset(f"camvid:{root}").load(0)


def test_corrupt_mask_is_named(make_camvid):
    root = make_camvid([mask()])
    (root / "trainannot" / "s000.png").write_bytes(b"garbage")
    with pytest.raises(SlimcvError, match=r"Cannot read mask .*s000\.png"):
        build_dataset(f"camvid:{root}").load(0)


def test_image_mask_size_mismatch_names_both_sizes(make_camvid):
    root = make_camvid([mask(4, 6)], image_sizes={0: (5, 6)})
    with pytest.raises(SlimcvError) as e:
        build_dataset(f"camvid:{root}").load(0)
    msg = str(e.value)
    assert "6x4" in msg and "6x5" in msg
    assert "trainannot" in msg and "s000.png" in msg


def test_mask_value_out_of_range_is_named(make_camvid):
    m = mask()
    m[1, 1] = 50
    m[2, 2] = 12
    root = make_camvid([m])
    with pytest.raises(SlimcvError) as e:
        build_dataset(f"camvid:{root}").load(0)
    msg = str(e.value)
    assert "[12, 50]" in msg and "0..10" in msg and "255" in msg
    assert re.search(r"trainannot.s000\.png", msg)


def test_sixteen_bit_mask_value_beyond_lut_is_named(make_camvid):
    root = make_camvid([mask()])
    Image.fromarray(np.full((4, 6), 300, np.uint16)).save(root / "trainannot" / "s000.png")
    with pytest.raises(SlimcvError, match="value 300"):
        build_dataset(f"camvid:{root}").load(0)


def test_rgb_mask_is_rejected(make_camvid, files):
    root = make_camvid([mask()])
    files.rgb(root / "trainannot" / "s000.png", np.zeros((4, 6, 3), np.uint8))
    with pytest.raises(SlimcvError, match=r"s000\.png has mode RGB"):
        build_dataset(f"camvid:{root}").load(0)


def test_empty_folder_dataset(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(SlimcvError, match="empty"):
        build_dataset(f"folder:{tmp_path}", num_classes=3)


def test_empty_camvid_list(make_camvid):
    root = make_camvid([])
    with pytest.raises(SlimcvError, match="'camvid' is empty"):
        build_dataset(f"camvid:{root}")


def test_empty_imagefolder_class_folders(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    with pytest.raises(SlimcvError, match="cat holds no images"):
        build_dataset(f"imagefolder:{tmp_path}")


def test_unknown_dataset_spec_suggests_close_name():
    with pytest.raises(SlimcvError) as e:
        build_dataset("camvd:x")
    assert "'camvd'" in str(e.value) and "Did you mean 'camvid'" in str(e.value)
    with pytest.raises(SlimcvError, match="camvid"):
        load_data("camvd:x")


@pytest.mark.parametrize("spec", ["", "   "])
def test_empty_spec(spec):
    with pytest.raises(SlimcvError, match="empty"):
        parse_spec(spec)


def test_missing_dataset_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(SlimcvError) as e:
        build_dataset(f"camvid:{missing}")
    assert str(missing) in str(e.value) and "does not exist" in str(e.value)
    with pytest.raises(SlimcvError, match="needs a path"):
        build_dataset("camvid")


@pytest.mark.parametrize("name", ["cityscapes", "voc", "folder", "imagefolder", "cifar10"])
def test_every_path_dataset_names_a_missing_folder(tmp_path, name):
    with pytest.raises(SlimcvError, match=re.escape(str(tmp_path / "nope"))):
        build_dataset(f"{name}:{tmp_path / 'nope'}")


def test_missing_list_file_is_named(make_camvid):
    root = make_camvid([mask()])
    with pytest.raises(SlimcvError, match=r"val\.txt is missing"):
        build_dataset(f"camvid:{root}", "val")


def test_malformed_list_line_gives_file_and_line(make_camvid):
    root = make_camvid([mask()])
    with (root / "train.txt").open("a") as f:
        f.write("\nonly_one_path.png\n")
    with pytest.raises(SlimcvError, match=r"train\.txt:3 .*only_one_path\.png"):
        build_dataset(f"camvid:{root}")


def test_absolute_segnet_paths_are_resolved_under_root(make_camvid):
    root = make_camvid([mask()])
    (root / "train.txt").write_text("/SegNet/CamVid/train/s000.png /SegNet/CamVid/trainannot/s000.png\n")
    ds = build_dataset(f"camvid:{root}")
    assert ds.pairs[0] == (root / "train" / "s000.png", root / "trainannot" / "s000.png")
    assert ds.load(0)[0].shape == (3, 4, 6)


def test_unknown_dataset_option_is_a_slimcv_error(make_camvid):
    root = make_camvid([mask()])
    with pytest.raises(SlimcvError, match="Bad options for dataset 'camvid'.*num_classes"):
        build_dataset(f"camvid:{root}", num_classes=3)


def test_bad_data_config_key():
    with pytest.raises(SlimcvError, match="unknown key 'sise'"):
        load_data({"spec": "synthetic-shapes", "sise": 32})


def test_imagefolder_class_too_small_for_holdout(tmp_path, files):
    for cls in ("a", "b"):
        for i in range(3):
            files.rgb(tmp_path / cls / f"{i}.png", files.random_image(4, 4))
    with pytest.raises(SlimcvError, match="3 images, not enough to hold out 50"):
        build_dataset(f"imagefolder:{tmp_path}")
    ds = build_dataset(f"imagefolder:{tmp_path}", "val", val_per_class=1)
    assert len(ds) == 2 and sorted(label for _, label in ds.samples) == [0, 1]
