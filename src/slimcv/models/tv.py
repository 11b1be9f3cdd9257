"""torchvision classification and segmentation models, built without any download."""
from __future__ import annotations

import torch
import torchvision
from torch import nn

from slimcv.models._registry import MODELS

# every torchvision classification and segmentation builder, by torchvision's own names
CLASSIFICATION = tuple(torchvision.models.list_models(module=torchvision.models))
SEGMENTATION = tuple(torchvision.models.list_models(module=torchvision.models.segmentation))
# options that make a builder return plain logits (no auxiliary heads) without a download or a slow init
DEFAULTS = {"googlenet": {"aux_logits": False, "init_weights": False},
            "inception_v3": {"aux_logits": False, "init_weights": False}}


class SegmentationLogits(nn.Module):
    """Wraps a model that returns a dict (torchvision segmentation) so it returns the plain ``out`` logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out["out"] if "out" in out else next(iter(out.values()))


class FirstOutput(nn.Module):
    """Wraps a model that returns a tuple (main logits first, e.g. auxiliary heads after) so it returns logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out[0] if isinstance(out, (tuple, list)) else out


def plain_logits(model: nn.Module) -> nn.Module:
    """``model`` when it returns a tensor of logits; else wrapped so it does (dict: its "out"; tuple: its first),
    so every stage can take a torchvision segmentation model or a model with auxiliary heads as it is."""
    if isinstance(model, (SegmentationLogits, FirstOutput)):
        return model
    from slimcv.models.detection import is_detector

    if is_detector(model):  # a detector's boxes are its output
        return model
    from torchvision.models.segmentation.lraspp import LRASPP

    if isinstance(model, LRASPP) or hasattr(model, "classifier") and hasattr(model, "aux_classifier"):
        return SegmentationLogits(model)
    if getattr(model, "aux_logits", False):  # GoogLeNet / Inception v3 return a tuple while training
        return FirstOutput(model)
    was = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, 3, 64, 64, device=next(model.parameters()).device))
    except Exception:  # a model that cannot run on this probe: the stage's own check says why, in one sentence
        return model
    finally:
        model.train(was)
    if isinstance(out, dict):
        return SegmentationLogits(model)
    if isinstance(out, (tuple, list)) and not (out and isinstance(out[0], dict)):  # not one dict of boxes an image
        return FirstOutput(model)
    return model


def registered_name(model: nn.Module, num_classes: int | None) -> tuple[str, dict] | None:
    """The registered torchvision name (and options) that builds ``model``'s architecture, or None."""
    inner = model.model if isinstance(model, (SegmentationLogits, FirstOutput)) else model
    module = type(inner).__module__
    if not module.startswith("torchvision.models.") or num_classes is None:
        return None
    if module.startswith("torchvision.models.detection."):
        from slimcv.models.detection import registered_detector

        return registered_detector(model, num_classes)
    theirs = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    kwargs = {"aux_loss": True} if getattr(inner, "aux_classifier", None) is not None else \
        {"aux_logits": True} if getattr(inner, "aux_logits", False) else {}
    names = [n for n in (*CLASSIFICATION, *SEGMENTATION)
             if torchvision.models.get_model_builder(n).__module__ == module]
    size = sum(v.numel() for v in model.state_dict().values())
    names.sort(key=lambda n: abs(_known_params(n) - size))  # the likeliest first: some must be built for real
    for name in names:
        try:
            with torch.device("meta"):
                built = MODELS.get(name)(num_classes=num_classes, **kwargs)
        except Exception:  # a builder that cannot run on the meta device (RegNet): build it for real
            built = MODELS.get(name)(num_classes=num_classes, **kwargs)
        if type(built.model if isinstance(built, (SegmentationLogits, FirstOutput)) else built) is type(inner) and \
                {k: tuple(v.shape) for k, v in built.state_dict().items()} == theirs:
            return name, kwargs
    return None


def _known_params(name: str) -> float:
    """Parameters of ``name`` as torchvision's weights metadata records them (no download), else infinity."""
    try:
        weights = list(torchvision.models.get_model_weights(name))
        return float(weights[0].meta["num_params"])
    except (ValueError, KeyError, IndexError):
        return float("inf")


def _register_classification(name: str) -> None:
    def build(num_classes: int = 1000, bn_momentum: float | None = None, **kwargs) -> nn.Module:
        kwargs = {**DEFAULTS.get(name, {}), **kwargs}
        model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes, **kwargs)
        if bn_momentum is not None:
            set_bn_momentum(model, bn_momentum)
        return FirstOutput(model) if getattr(model, "aux_logits", False) else model

    build.__doc__ = (f"torchvision {name} (random init; load weights from a local file); ``bn_momentum`` sets its "
                     "BatchNorm momentum.")
    MODELS.register(name, task="classification", family="torchvision")(build)


def set_bn_momentum(model: nn.Module, momentum: float) -> nn.Module:
    """Set every BatchNorm's running-statistics momentum (torchvision's MobileNets use 0.01, made for 600-epoch
    ImageNet runs: over a short schedule from scratch the statistics lag the weights and evaluation collapses)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum
    return model


def _register_segmentation(name: str) -> None:
    def build(num_classes: int = 21, **kwargs) -> nn.Module:
        kwargs.setdefault("aux_loss", None if name.startswith("lraspp") else False)
        if kwargs["aux_loss"] is None:
            kwargs.pop("aux_loss")
        fn = getattr(torchvision.models.segmentation, name)
        return SegmentationLogits(fn(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs))

    build.__doc__ = f"torchvision {name}, returning logits (random init; load weights from a local file)."
    MODELS.register(name, task="segmentation", family="torchvision")(build)


for _n in CLASSIFICATION:
    _register_classification(_n)
for _n in SEGMENTATION:
    _register_segmentation(_n)
