"""Every registered model builds with any num_classes and gives the right output shape; names and tasks."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from slimcv.errors import SlimcvError
from slimcv.models import MODELS, create_model, list_models, model_task

NUM_CLASSES = 5


# torchvision's families are all registered; these run here at 64 px, every one at its own size in the slow test
FAST_TORCHVISION = {"resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
                    "efficientnet_b0", "shufflenet_v2_x1_0", "regnet_x_400mf", "deeplabv3_mobilenet_v3_large",
                    "deeplabv3_resnet50", "deeplabv3_resnet101", "lraspp_mobilenet_v3_large", "fcn_resnet50"}


@pytest.mark.parametrize("name", [n for n in list_models() if model_task(n) != "detection" and (  # test_detectors.py
                                  MODELS.meta(n)["family"] != "torchvision" or n in FAST_TORCHVISION)])
def test_every_model_builds_and_forwards(name):
    model = create_model(name, num_classes=NUM_CLASSES).eval()
    task = model_task(name)
    sizes = [(64, 64)] if task == "classification" else [(64, 64), (50, 70)]  # odd size: padding/cropping
    with torch.inference_mode():
        for h, w in sizes:
            out = model(torch.randn(1, 3, h, w))
            assert isinstance(out, torch.Tensor), f"{name} returned {type(out).__name__}, not plain logits"
            expected = (1, NUM_CLASSES) if task == "classification" else (1, NUM_CLASSES, h, w)
            assert tuple(out.shape) == expected
            assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["unet", "unet_small"])
@pytest.mark.parametrize("size", [(50, 70), (33, 47), (16, 16)])
def test_unet_keeps_any_input_size(name, size):
    model = create_model(name, num_classes=3, base_width=4).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, *size))
    assert tuple(out.shape) == (2, 3, *size)


def test_unet_crop_keeps_the_top_left_region():
    # Padding goes right/bottom, so the output for the unpadded pixels must come from the top-left corner.
    model = create_model("unet_small", num_classes=2, depth=2).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        full = model(x)
        odd = model(x[..., :30, :29])
    assert odd.shape[-2:] == (30, 29)
    # Far from the padded border the receptive field is unchanged, so those logits agree.
    torch.testing.assert_close(odd[..., :16, :16], full[..., :16, :16], atol=1e-5, rtol=1e-4)


def test_unet_widths():
    small = create_model("unet_small", num_classes=2)
    big = create_model("unet", num_classes=2)
    assert small.head.in_channels == 8 and big.head.in_channels == 32
    assert create_model("unet", num_classes=2, base_width=16, depth=3).depth == 3
    n_big = sum(p.numel() for p in big.parameters())
    assert 7.0e6 < n_big < 8.5e6  # the docstring's 7.8 M
    assert sum(p.numel() for p in small.parameters()) < n_big / 10


def test_cifar_resnet_depths_and_width():
    def params(m):
        return sum(p.numel() for p in m.parameters())

    r20, r56 = create_model("resnet20", 10), create_model("resnet56", 10)
    assert 0.25e6 < params(r20) < 0.30e6  # ~0.27 M (He et al. 2016); option-B shortcuts add a little
    assert params(r56) > 2.5 * params(r20)
    assert create_model("resnet20", 10, width=8).fc.in_features == 32


def test_model_task():
    assert model_task("unet") == model_task("unet_small") == "segmentation"
    assert model_task("deeplabv3_mobilenet_v3_large") == "segmentation"
    assert model_task("resnet18") == model_task("resnet20") == "classification"
    assert model_task("smp:Unet:resnet18") == "segmentation"
    assert model_task("timm:resnet18") == "classification"
    with pytest.raises(SlimcvError, match="Did you mean 'unet_small'"):
        model_task("unet_smal")


def test_list_models_by_task_partitions_the_registry():
    seg, cls, det = list_models("segmentation"), list_models("classification"), list_models("detection")
    assert set(seg) | set(cls) | set(det) == set(list_models())
    assert not set(seg) & set(cls) and not set(det) & (set(seg) | set(cls))
    assert {"slimdet_s", "ssdlite320_mobilenet_v3_large", "fcos_resnet50_fpn"} <= set(det)
    assert {"unet", "unet_small", "deeplabv3_resnet50", "lraspp_mobilenet_v3_large"} <= set(seg)
    assert {"resnet20", "resnet110", "resnet18", "mobilenet_v3_small"} <= set(cls)
    assert all(model_task(n) == "segmentation" for n in seg)
    assert list_models() == sorted(list_models())
    families = {"unet": "unet", "unet_small": "unet", "resnet20": "cifar_resnet", "resnet18": "torchvision",
                "deeplabv3_resnet50": "torchvision"}
    assert {n: MODELS.meta(n)["family"] for n in families} == families


def test_unknown_model_lists_close_match():
    with pytest.raises(SlimcvError) as e:
        create_model("resnet19", num_classes=10)
    msg = str(e.value)
    assert "Unknown model 'resnet19'" in msg and "'resnet18'" in msg


def test_bad_model_option_is_a_slimcv_error():
    with pytest.raises(SlimcvError, match="Bad options for model 'unet'.*widht"):
        create_model("unet", num_classes=3, widht=16)
    with pytest.raises(SlimcvError, match="Bad options for model 'resnet18'"):
        create_model("resnet18", num_classes=3, no_such_option=1)


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed")
def test_timm_prefix_without_timm_says_how_to_install():
    with pytest.raises(SlimcvError, match=r"pip install 'slimcv\[timm\]'"):
        create_model("timm:resnet18", num_classes=5)


@pytest.mark.skipif(importlib.util.find_spec("segmentation_models_pytorch") is not None,
                    reason="segmentation-models-pytorch is installed")
def test_smp_prefix_without_smp_says_how_to_install():
    with pytest.raises(SlimcvError, match=r"pip install 'slimcv\[smp\]'"):
        create_model("smp:Unet:resnet18", num_classes=5)


def test_unknown_prefix_is_an_unknown_model():
    with pytest.raises(SlimcvError, match="Unknown model 'tim:resnet18'"):
        create_model("tim:resnet18", num_classes=5)


def test_every_torchvision_classifier_and_segmenter_is_registered_and_builds_by_name():
    """Built on the meta device (no memory, no init cost); RegNet's builder needs real tensors (the slow test)."""
    import torchvision

    from slimcv.models import MODELS, model_task

    tv_cls = torchvision.models.list_models(module=torchvision.models)
    tv_seg = torchvision.models.list_models(module=torchvision.models.segmentation)
    assert {"convnext_tiny", "densenet121", "squeezenet1_1", "vit_b_16", "regnet_y_400mf"} <= set(tv_cls)
    for name in tv_cls + tv_seg:
        assert model_task(name) == ("segmentation" if name in tv_seg else "classification")
        if name.startswith("regnet"):
            continue
        with torch.device("meta"):
            net = MODELS.get(name)(num_classes=5)
        assert isinstance(net, torch.nn.Module), name


@pytest.mark.slow
def test_every_registered_torchvision_model_runs_by_name():
    import torchvision

    from slimcv.models import create_model

    for name in torchvision.models.list_models(module=torchvision.models):
        net = create_model(name, 5).eval()
        size = 299 if name == "inception_v3" else 224
        with torch.no_grad():
            assert net(torch.rand(1, 3, size, size)).shape == (1, 5), name
