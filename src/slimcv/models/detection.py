"""Object detectors: torchvision's (random init, local weights only) and slimcv's own CPU-first FCOS family.

Every detector follows torchvision's contract: ``model(images, targets)`` in training returns a dict of losses,
``model(images)`` in eval returns one ``{"boxes", "scores", "labels"}`` per image. Class ids inside a detector
start at 1 (0 is background, as torchvision numbers them); slimcv's data numbers classes from 0 and shifts them
at the model's door (``engine.detection``). Images go in as floats in [0, 1]: the detector normalises them.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torchvision
from torch import nn
from torchvision.models.detection._utils import BoxLinearCoder
from torchvision.models.detection.fcos import FCOS, FCOSClassificationHead, FCOSHead, FCOSRegressionHead
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN

from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from slimcv.errors import SlimcvError
from slimcv.models._registry import MODELS

# torchvision detectors slimcv registers, with the input size each was designed for
TORCHVISION = {"ssdlite320_mobilenet_v3_large": 320, "fasterrcnn_mobilenet_v3_large_320_fpn": 320,
               "fcos_resnet50_fpn": 800, "retinanet_resnet50_fpn_v2": 800}
DETECTOR_TYPES = (GeneralizedRCNN, SSD, FCOS, RetinaNet)


def is_detector(model: nn.Module) -> bool:
    """True for a torchvision-style detector (images and targets in, losses or boxes out)."""
    inner = getattr(model, "module", model)
    return isinstance(inner, DETECTOR_TYPES) or getattr(inner, "slimcv_task", None) == "detection"


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def fit_input_size(model: nn.Module, size: int | Sequence[int] | None) -> nn.Module:
    """Make a torchvision detector take ``size`` (H, W) images as they are: its own transform resizes nothing."""
    if size is None or not hasattr(model, "transform"):
        return model
    h, w = _hw(size)
    t = model.transform
    if getattr(t, "fixed_size", None) is not None:  # SSD resizes every image to one size
        t.fixed_size = (h, w)
    t.min_size, t.max_size = (min(h, w),), max(h, w)
    return model


def deployed_size(model: nn.Module, data_hw: Sequence[int] | None = None) -> tuple[int, int]:
    """The (H, W) a detector's static network takes for images of ``data_hw``: what its own transform resizes them
    to (torchvision's rule; the data's size for a detector built at it, smaller for a lower-resolution student)."""
    t = model.transform
    if getattr(t, "fixed_size", None):
        return _hw(tuple(t.fixed_size))
    lo, hi = int(t.min_size[0]), int(t.max_size)
    if data_hw is None:
        return (lo, hi) if hi < 2 * lo else (lo, lo)
    h, w = _hw(tuple(data_hw))
    scale = min(lo / min(h, w), hi / max(h, w))
    return round(h * scale), round(w * scale)


def registered_detector(model: nn.Module, num_classes: int) -> tuple[str, dict] | None:
    """The registered name and options (its input size) that build ``model``'s architecture, or None."""
    t = model.transform
    size = list(t.fixed_size) if getattr(t, "fixed_size", None) else [int(t.min_size[0]), int(t.max_size)]
    theirs = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for name in TORCHVISION:
        with torch.device("meta"):
            built = MODELS.get(name)(num_classes=num_classes, size=size)
        if type(built) is type(model) and {k: tuple(v.shape) for k, v in built.state_dict().items()} == theirs:
            return name, {"size": size}
    return None


def _register_torchvision(name: str, native: int) -> None:
    def build(num_classes: int = 90, size: int | Sequence[int] | None = None, **kwargs) -> nn.Module:
        fn = getattr(torchvision.models.detection, name)
        kwargs.setdefault("weights_backbone", None)
        model = fn(weights=None, num_classes=num_classes + 1, **kwargs)  # + background, as torchvision counts
        return fit_input_size(model, size if size is not None else native)

    build.__doc__ = f"torchvision {name} (random init; load weights from a local file)."
    MODELS.register(name, task="detection", family="torchvision")(build)


for _name, _native in TORCHVISION.items():
    _register_torchvision(_name, _native)


# ---------------------------------------------------------------- slimcv's own detector: FCOS on a small backbone

BACKBONES = ("mobilenet_v3_small", "mobilenet_v3_large", "resnet18")


def _stage_outputs(features: nn.Sequential) -> tuple[dict[str, str], list[int]]:
    """The last layer at strides 8, 16 and 32 of a feature stack, and its channels (found by running it)."""
    x = torch.zeros(1, 3, 64, 64)
    last: dict[int, tuple[str, int]] = {}
    with torch.no_grad():
        for name, layer in features.named_children():
            x = layer(x)
            if x.ndim == 4:
                last[64 // x.shape[-1]] = (name, x.shape[1])
    picked = [last[s] for s in (8, 16, 32)]
    return {n: str(i) for i, (n, _) in enumerate(picked)}, [c for _, c in picked]


def _backbone(name: str, width: float) -> nn.Sequential:
    if name.startswith("mobilenet_v3"):
        from slimcv.models.mobile import NORM  # BatchNorm statistics that keep up with a short schedule

        net = getattr(torchvision.models, name)(weights=None, width_mult=width, norm_layer=NORM)
        return net.features
    if name == "resnet18":
        net = torchvision.models.resnet18(weights=None)
        return nn.Sequential(nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool), net.layer1, net.layer2,
                             net.layer3, net.layer4)
    raise SlimcvError(f"slimdet backbone {name!r} is unknown; choose one of {list(BACKBONES)}.")


class SlimHead(FCOSHead):
    """FCOS's head with GroupNorm in ``groups`` groups (torchvision fixes 32, too many for a slim FPN)."""

    def __init__(self, channels: int, num_classes: int, num_convs: int, groups: int) -> None:
        nn.Module.__init__(self)
        norm = partial(nn.GroupNorm, groups)
        self.box_coder = BoxLinearCoder(normalize_by_size=True)
        self.classification_head = FCOSClassificationHead(channels, 1, num_classes, num_convs, norm_layer=norm)
        self.regression_head = FCOSRegressionHead(channels, 1, num_convs, norm_layer=norm)


@MODELS.register("slimdet", task="detection", family="slimcv")
def slimdet(num_classes: int = 3, size: int | Sequence[int] = 320, backbone: str = "mobilenet_v3_large",
            width: float = 1.0, fpn_channels: int = 64, head_convs: int = 2, score_thresh: float = 0.05,
            nms_thresh: float = 0.6, detections_per_img: int = 100) -> FCOS:
    """slimcv's CPU-first detector: anchor-free FCOS on a MobileNetV3 or ResNet-18 with a slim FPN (P3-P6) and a
    shallow head; the network exports whole as one static graph (decoding and NMS run beside it)."""
    groups = min(32, fpn_channels // 4)  # at least 4 channels a group: a 1x1 top level of one image normalises
    if fpn_channels < 8 or fpn_channels % 8 or fpn_channels % groups:
        raise SlimcvError(f"slimdet fpn_channels {fpn_channels} must be a multiple of 8 (and of 32 from 128 on): "
                          "the head's GroupNorm splits them in groups.")
    features = _backbone(backbone, width)
    return_layers, channels = _stage_outputs(features)
    body = BackboneWithFPN(features, return_layers, channels, fpn_channels, extra_blocks=LastLevelMaxPool())
    strides = (8, 16, 32, 64)
    anchors = AnchorGenerator(sizes=tuple((s,) for s in strides), aspect_ratios=((1.0,),) * len(strides))
    head = SlimHead(fpn_channels, num_classes + 1, head_convs, groups)
    h, w = _hw(size)
    model = FCOS(body, num_classes + 1, min_size=min(h, w), max_size=max(h, w), anchor_generator=anchors,
                 head=head, score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img)
    return fit_input_size(model, (h, w))


def _preset(name: str, doc: str, **defaults) -> None:
    def build(num_classes: int = 3, **kwargs) -> FCOS:
        return slimdet(num_classes, **{**defaults, **kwargs})

    build.__doc__ = doc
    MODELS.register(name, task="detection", family="slimcv")(build)


_preset("slimdet_s", "slimdet on MobileNetV3-Small, FPN 64: the smallest (2-core CPUs, edge boxes).",
        backbone="mobilenet_v3_small", width=1.0, fpn_channels=64, head_convs=2)
_preset("slimdet_m", "slimdet on MobileNetV3-Large, FPN 64 (the default slimdet).",
        backbone="mobilenet_v3_large", width=1.0, fpn_channels=64, head_convs=2)
_preset("slimdet_r18", "slimdet on ResNet-18, FPN 128, 3 head convs: a larger teacher.",
        backbone="resnet18", fpn_channels=128, head_convs=3)


# ---------------------------------------------------------------- the network as deployed: one static graph

class DenseDetector(nn.Module):
    """A single-stage detector (SSD, RetinaNet, FCOS, slimdet) as one static graph for a fixed input size:
    (N, 3, H, W) images in [0, 1] -> (N, A, 4 + C) decoded boxes and class scores (background dropped).
    ``selection`` (a ``deploy.boxes.BoxSelection``) picks the final boxes beside the graph."""

    def __init__(self, model: nn.Module, size: Sequence[int], score_threshold: float | None = None) -> None:
        super().__init__()
        from slimcv.deploy.boxes import BoxSelection

        self.kind = dense_kind(model)
        self.model = model
        self.size = _hw(size)
        t = model.transform
        self.register_buffer("mean", torch.tensor(t.image_mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(t.image_std, dtype=torch.float32).view(1, 3, 1, 1))
        anchors, levels = self._anchors()
        self.register_buffer("anchors", anchors)
        own = getattr(model, "score_thresh", 0.05)
        self.selection = BoxSelection(levels=levels, score_threshold=float(own if score_threshold is None
                                                                           else score_threshold),
                                      nms_iou=float(getattr(model, "nms_thresh", 0.5)),
                                      candidates=int(getattr(model, "topk_candidates", 1000)),
                                      max_detections=int(getattr(model, "detections_per_img", 100)))

    @torch.no_grad()
    def _anchors(self) -> tuple[torch.Tensor, tuple[int, ...]]:
        from torchvision.models.detection.image_list import ImageList

        was = self.model.training
        self.model.eval()
        p = next(self.model.parameters())
        x = torch.zeros(1, 3, *self.size, device=p.device, dtype=p.dtype)
        feats = self._features(x)
        anchors = self.model.anchor_generator(ImageList(x, [self.size]), feats)[0]
        hw = [f.shape[-2] * f.shape[-1] for f in feats]
        per_location = anchors.shape[0] // sum(hw)
        self.model.train(was)
        return anchors.float(), tuple(n * per_location for n in hw)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.model.backbone(x)
        return list(feats.values()) if isinstance(feats, dict) else [feats]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model.head(self._features((x - self.mean) / self.std))
        n = x.shape[0]
        rel = out["bbox_regression"].reshape(-1, 4)
        coder = self.model.box_coder
        decode = coder.decode if self.kind == "fcos" else coder.decode_single  # linear (FCOS) or log-space deltas
        boxes = decode(rel, self.anchors.repeat(n, 1)).reshape(n, -1, 4)
        h, w = self.size
        boxes = torch.stack([boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h), boxes[..., 2].clamp(0, w),
                             boxes[..., 3].clamp(0, h)], dim=-1)
        logits = out["cls_logits"]
        if self.kind == "ssd":
            scores = torch.softmax(logits, -1)[..., 1:]
        elif self.kind == "fcos":
            scores = torch.sqrt(torch.sigmoid(logits) * torch.sigmoid(out["bbox_ctrness"]))[..., 1:]
        else:
            scores = torch.sigmoid(logits)[..., 1:]
        return torch.cat([boxes, scores], dim=-1)


def dense_kind(model: nn.Module) -> str:
    """'ssd', 'fcos' or 'retinanet': how a single-stage detector's head outputs become scores; else one sentence."""
    for kind, cls in (("ssd", SSD), ("fcos", FCOS), ("retinanet", RetinaNet)):
        if isinstance(model, cls):
            return kind
    if isinstance(model, GeneralizedRCNN):
        raise SlimcvError(f"{type(model).__name__} is a two-stage detector: its second stage needs NMS inside the "
                          "graph, which ONNX runtimes get wrong on images with zero or one detection; deploy a "
                          "single-stage detector (slimdet, FCOS, RetinaNet or SSD) instead.")
    raise SlimcvError(f"{type(model).__name__} is not a torchvision SSD, RetinaNet or FCOS detector, so slimcv "
                      "cannot split it into a static network and box selection; export it yourself with "
                      "torch.onnx, or build it on one of those classes.")


# ---------------------------------------------------------------- what structured pruning traces and keeps

_OUTPUT_LAYERS = {"fcos": ("head.classification_head.cls_logits", "head.regression_head.bbox_reg",
                           "head.regression_head.bbox_ctrness"),
                  "retinanet": ("head.classification_head.cls_logits", "head.regression_head.bbox_reg"),
                  "ssd": ("head.classification_head", "head.regression_head")}


def head_outputs(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """A single-stage detector's raw head outputs for (N, 3, H, W) images in [0, 1], flattened into one (N, K)
    tensor: the path Torch-Pruning traces (the detector's own forward loops over images and runs NMS)."""
    t = model.transform
    mean = torch.tensor(t.image_mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(t.image_std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    feats = model.backbone((images - mean) / std)
    out = model.head(list(feats.values()) if isinstance(feats, dict) else [feats])
    return torch.cat([v.flatten(1) for v in out.values()], 1)


def trace_options(model: nn.Module) -> dict:
    """How Torch-Pruning runs ``model`` to trace it (when pruning and when replaying a pruning history): a detector
    through its backbone and head only."""
    return {"forward_fn": head_outputs} if is_detector(model) else {}


def output_modules(model: nn.Module) -> list[nn.Module]:
    """The head layers that emit class scores and boxes: structured pruning keeps them whole, so the anchors x
    classes and box layout stays as trained."""
    names = dict(model.named_modules())
    return [names[n] for n in _OUTPUT_LAYERS[dense_kind(model)] if n in names]


def group_norm_widths(model: nn.Module) -> dict[str, int]:
    """Conv layers whose output a GroupNorm normalises, with its group count: pruned widths must stay multiples
    of it."""
    out, last = {}, None
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            last = (name, m.out_channels)
        elif isinstance(m, nn.GroupNorm) and last is not None and last[1] == m.num_channels:
            out[last[0]] = m.num_groups
    return out
