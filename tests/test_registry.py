"""The shared Registry: registration, duplicates, unknown names with close-match hints, metadata."""
from __future__ import annotations

import pytest

from slimcv.errors import SlimcvError, close_matches
from slimcv.registry import Registry


@pytest.fixture
def reg() -> Registry:
    r = Registry("model")

    @r.register("unet_small", task="segmentation")
    def small():
        return "small"

    @r.register(task="segmentation")
    def unet():
        return "unet"

    @r.register("resnet18", task="classification")
    def r18():
        return "r18"

    return r


def test_register_and_get(reg):
    assert reg.get("unet_small")() == "small"
    assert reg.get("unet")() == "unet"  # default name: the function's __name__
    assert reg.names() == ["resnet18", "unet", "unet_small"]
    assert list(reg) == reg.names() and len(reg) == 3
    assert "unet" in reg and "small" not in reg
    assert reg.meta("resnet18") == {"task": "classification"}


def test_duplicate_registration_raises_and_keeps_the_first(reg):
    with pytest.raises(SlimcvError, match="'unet_small' is already registered"):
        reg.register("unet_small")(lambda: "other")
    with pytest.raises(SlimcvError, match="model named 'unet'"):

        @reg.register()
        def unet():
            return "again"

    assert reg.get("unet_small")() == "small" and reg.get("unet")() == "unet"
    assert len(reg) == 3


def test_unknown_name_suggests_close_match(reg):
    with pytest.raises(SlimcvError) as e:
        reg.get("unet_smal")
    msg = str(e.value)
    assert "Unknown model 'unet_smal'" in msg
    assert "Did you mean 'unet_small'" in msg
    assert "3 valid names" in msg and "list_models()" in msg


def test_names_without_a_listing_command_are_listed_inline():
    from slimcv.registry import Registry

    losses = Registry("kd loss")
    losses.register("kd")(lambda: None)
    losses.register("cwd")(lambda: None)
    with pytest.raises(SlimcvError, match=r"Unknown kd loss 'kld'.*Valid names: kd, cwd\.$"):
        losses.get("kld")


def test_unknown_name_without_close_match_has_no_hint(reg):
    with pytest.raises(SlimcvError) as e:
        reg.get("zzzzzzzz")
    assert "Did you mean" not in str(e.value)


def test_meta_of_unknown_name_raises(reg):
    with pytest.raises(SlimcvError, match="unet_small"):
        reg.meta("unet_smal")


def test_metadata_is_copied():
    r = Registry("dataset")
    meta = {"task": "segmentation"}
    r.register("a", **meta)(lambda: None)
    meta["task"] = "classification"
    assert r.meta("a") == {"task": "segmentation"}
    with pytest.raises(SlimcvError, match="Unknown dataset"):
        r.get("b")


def test_close_matches_format():
    assert close_matches("resnt18", ["resnet18", "unet"]) == " Did you mean 'resnet18'?"
    assert close_matches("qqq", ["resnet18"]) == ""


def test_real_registries_suggest_close_names():
    from slimcv.data._registry import DATASETS
    from slimcv.models import MODELS

    with pytest.raises(SlimcvError, match="Did you mean 'unet_small'"):
        MODELS.get("unet_smal")
    with pytest.raises(SlimcvError, match="Did you mean 'camvid'"):
        DATASETS.get("camvd")
    with pytest.raises(SlimcvError, match="already registered"):
        MODELS.register("unet")(lambda num_classes: None)
    assert MODELS.meta("unet")["family"] == "unet"  # the failed registration changed nothing
