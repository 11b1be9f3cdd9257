"""Distillation for single-stage detectors (slimdet, FCOS, RetinaNet, SSD): the student's own losses plus
imitation of the teacher's neck (FPN) features and, where both share a head design, KD on the head's outputs
at matched locations.

Feature term: PKD (Cao et al., "PKD: General Distillation Framework for Object Detectors via Pearson
Correlation Coefficient", NeurIPS 2022): each channel of each FPN level is normalised to zero mean and unit
variance over its positions before the MSE, so a teacher whose features are larger or smaller does not set the
loss scale; a learnable 1x1 adapter maps the student's width to the teacher's. Positions on objects (the
ground-truth boxes, or where the teacher is confident) weigh ``foreground`` times more than the background,
in the spirit of FGD (Yang et al., CVPR 2022), so the many background positions do not dominate.

Head term: at each location, the student's class scores learn the teacher's (binary KL towards the teacher's
sigmoid scores, or KL for SSD's softmax) and FCOS's centerness likewise, each location weighted by the teacher's
confidence. An L1 of the box outputs towards the teacher's (as in LD, "localization distillation") is available
(``box`` weight) but off by default: it cost the student 3 mAP in measurement.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from slimcv.errors import SlimcvError

DEFAULT_FOREGROUND = 4.0  # how much more an object position weighs than background in the feature term
# when the config names no loss: the neck's features. Synthetic shapes, slimdet_m (67.0 mAP) teaching slimdet_s,
# seed 0: after 10 epochs alone 41.7, kd 44.0, feature 44.0, both 43.1 mAP; after 20 epochs alone 54.6, kd 53.7
# (it only speeds the start), feature 56.5
DEFAULT_LOSSES = (("feature", 1.0),)
# the box term's weight inside kd: off, as measured (synthetic shapes, slimdet_m -> slimdet_s, 10 epochs: kd with
# it 41.0 mAP, without it 44.0, the student alone 41.7)
DEFAULT_BOX = 0.0


def _levels(out) -> list[torch.Tensor]:
    return list(out.values()) if isinstance(out, dict) else list(out) if isinstance(out, (list, tuple)) else [out]


class _Tap:
    """What a detector computed in its last forward: the transformed batch, its FPN levels and head outputs."""

    def __init__(self, model: nn.Module) -> None:
        self.seen: dict[str, object] = {}
        self.hooks = [model.transform.register_forward_hook(self._save("transform")),
                      model.backbone.register_forward_hook(self._save("features")),
                      model.head.register_forward_hook(self._save("head"))]

    def _save(self, key: str):
        def hook(_m, _inp, out):
            self.seen[key] = out

        return hook

    def take(self) -> dict[str, object]:
        seen, self.seen = self.seen, {}
        return seen

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()


def _score(head: dict[str, torch.Tensor], kind: str) -> torch.Tensor:
    """(N, A) the detector's confidence that a location holds any object."""
    logits = head["cls_logits"].float()
    if kind == "ssd":
        return 1 - torch.softmax(logits, -1)[..., 0]
    p = torch.sigmoid(logits[..., 1:])
    if kind == "fcos":
        p = torch.sqrt(p * torch.sigmoid(head["bbox_ctrness"].float()))
    return p.amax(-1)


def _box_mask(targets: list[dict[str, torch.Tensor]], shape: Sequence[int], image_hw: Sequence[int]) -> torch.Tensor:
    """(N, 1, h, w): 1 inside a ground-truth box on a level of ``shape`` over a batch of ``image_hw`` pixels."""
    n, h, w = len(targets), shape[-2], shape[-1]
    mask = torch.zeros(n, 1, h, w)
    sy, sx = h / image_hw[0], w / image_hw[1]
    for i, t in enumerate(targets):
        for x0, y0, x1, y1 in t["boxes"].detach().cpu().tolist():
            r0, r1 = int(y0 * sy), max(int(y0 * sy) + 1, int(round(y1 * sy)))
            c0, c1 = int(x0 * sx), max(int(x0 * sx) + 1, int(round(x1 * sx)))
            mask[i, 0, r0:r1, c0:c1] = 1
    return mask


def _normalised(f: torch.Tensor) -> torch.Tensor:
    f = f.float()
    return (f - f.mean((2, 3), keepdim=True)) / (f.std((2, 3), keepdim=True, correction=0) + 1e-6)


class DetectionDistillObjective(nn.Module):
    """alpha * the student's own losses + ramp * (kd weight * head KD + feature weight * neck imitation);
    ``feature_weight`` None: 1 when the heads do not line up (so the neck carries the teacher's knowledge), else 0.

    The teacher is frozen and is not a sub-module (its weights stay out of checkpoints and the optimizer); the
    adapters are, so they train with the student. Call ``remove()`` when training ends."""

    def __init__(self, teacher: nn.Module, student: nn.Module, sample: torch.Tensor, *, alpha: float = 1.0,
                 kd_weight: float = 1.0, feature_weight: float | None = 1.0, temperature: float = 1.0,
                 foreground: float = DEFAULT_FOREGROUND, box: float = DEFAULT_BOX, warmup_steps: int = 0) -> None:
        super().__init__()
        from slimcv.models.detection import dense_kind

        self.__dict__["teacher"] = teacher
        self.kind, self.teacher_kind = dense_kind(student), dense_kind(teacher)
        self.alpha, self.kd_weight, self.feature_weight = alpha, kd_weight, feature_weight
        self.temperature, self.foreground, self.box = temperature, foreground, box
        self.warmup_steps = warmup_steps
        if warmup_steps:
            self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.tap = _Tap(student)
        s, t = self._sample_outputs(student, teacher, sample)
        s_cls, t_cls = s["head"]["cls_logits"].shape, t["head"]["cls_logits"].shape
        self.matched = self.kind == self.teacher_kind and s_cls == t_cls
        if feature_weight is None:
            self.feature_weight = 0.0 if self.matched and kd_weight > 0 else 1.0
        if kd_weight > 0 and not self.matched:
            import warnings

            warnings.warn(f"The student's head ({self.kind}, {tuple(s_cls[1:])}) does not match the teacher's "
                          f"({self.teacher_kind}, {tuple(t_cls[1:])}) location for location, so only the neck's "
                          "features are distilled.", stacklevel=2)
        sf, tf = _levels(s["features"]), _levels(t["features"])
        if len(sf) != len(tf) and self.feature_weight > 0:
            raise SlimcvError(f"The student's neck has {len(sf)} feature levels and the teacher's {len(tf)}; feature "
                              "distillation pairs them level by level: use a teacher and student with the same "
                              "strides, or losses: [kd] only.")
        # no adapters without the feature term: parameters that get no gradient trouble DDP
        self.adapters = nn.ModuleList(
            nn.Identity() if a.shape[1] == b.shape[1] else nn.Conv2d(a.shape[1], b.shape[1], 1)
            for a, b in zip(sf, tf)) if self.feature_weight > 0 else nn.ModuleList()

    @torch.no_grad()
    def _sample_outputs(self, student: nn.Module, teacher: nn.Module, sample: torch.Tensor):
        was = student.training
        student.eval()
        student(sample)
        student.train(was)
        return self.tap.take(), self.teacher_outputs(teacher, sample)

    @staticmethod
    @torch.no_grad()
    def teacher_outputs(teacher: nn.Module, images: torch.Tensor) -> dict[str, object]:
        batch, _ = teacher.transform(list(images))
        feats = teacher.backbone(batch.tensors)
        return {"features": feats, "head": teacher.head(_levels(feats))}

    def forward(self, model: nn.Module, images: torch.Tensor, targets) -> dict[str, torch.Tensor]:
        from slimcv.engine.detection import model_targets

        losses = model(list(images), model_targets(targets))
        own = {k: v.float() for k, v in losses.items()}
        seen = self.tap.take()
        teacher = self.teacher_outputs(self.teacher, images)
        batch, tgts = seen["transform"]
        terms = {**own}
        kd = torch.zeros((), device=images.device)
        t_score = _score(teacher["head"], self.teacher_kind)
        if self.kd_weight > 0 and self.matched:
            terms["kd"] = self._head_kd(seen["head"], teacher["head"], t_score)
            kd = kd + self.kd_weight * terms["kd"]
        if self.feature_weight > 0:
            terms["feature"] = self._features(_levels(seen["features"]), _levels(teacher["features"]), t_score,
                                              tgts, batch.tensors.shape[-2:])
            kd = kd + self.feature_weight * terms["feature"]
        total = self.alpha * sum(own.values()) + self._ramp() * kd
        return {"loss": total, **{k: v.detach() for k, v in terms.items()}}

    def _head_kd(self, s: dict[str, torch.Tensor], t: dict[str, torch.Tensor], t_score: torch.Tensor) -> torch.Tensor:
        """Class (and centerness) scores towards the teacher's, and with ``box`` the box outputs towards its boxes,
        weighted per location by the teacher's confidence and normalised by its sum."""
        w = t_score.detach()
        norm = w.sum().clamp_min(1.0)
        temp = self.temperature
        sl, tl = s["cls_logits"].float() / temp, t["cls_logits"].float().detach() / temp
        if self.kind == "ssd":
            cls = (F.softmax(tl, -1) * (F.log_softmax(tl, -1) - F.log_softmax(sl, -1))).sum(-1)
        else:
            p = torch.sigmoid(tl)  # BCE minus the teacher's own entropy: a binary KL per class, 0 at a match
            cls = (F.binary_cross_entropy_with_logits(sl, p, reduction="none")
                   - F.binary_cross_entropy_with_logits(tl, p, reduction="none")).sum(-1)
        loss = (cls * w).sum() / norm * temp * temp
        if "bbox_ctrness" in s and "bbox_ctrness" in t:
            sc, tc = s["bbox_ctrness"].float().squeeze(-1), t["bbox_ctrness"].float().detach().squeeze(-1)
            pc = torch.sigmoid(tc)
            ctr = (F.binary_cross_entropy_with_logits(sc, pc, reduction="none")
                   - F.binary_cross_entropy_with_logits(tc, pc, reduction="none"))
            loss = loss + (ctr * w).sum() / norm
        box = F.smooth_l1_loss(s["bbox_regression"].float(), t["bbox_regression"].float().detach(),
                               reduction="none", beta=0.1).sum(-1)
        return loss + self.box * (box * w).sum() / norm

    def _features(self, sf: list[torch.Tensor], tf: list[torch.Tensor], t_score: torch.Tensor,
                  targets: list[dict[str, torch.Tensor]] | None, image_hw) -> torch.Tensor:
        total = torch.zeros((), device=t_score.device)
        start = 0
        sizes = [f.shape[-2] * f.shape[-1] for f in tf]
        per_location = max(1, t_score.shape[1] // max(sum(sizes), 1))
        for fs, ft, adapter, size in zip(sf, tf, self.adapters, sizes):
            ft = ft.detach()
            fs = adapter(fs.float())
            if fs.shape[-2:] != ft.shape[-2:]:
                fs = F.interpolate(fs, size=ft.shape[-2:], mode="bilinear", align_corners=False)
            n, _, h, w = ft.shape
            score = t_score[:, start:start + size * per_location].reshape(n, h, w, per_location).amax(-1)[:, None]
            start += size * per_location
            fg = score.detach()
            if targets is not None:
                fg = torch.maximum(fg, _box_mask(targets, ft.shape, image_hw).to(fg.device))
            weight = 1 + self.foreground * fg
            err = (_normalised(fs) - _normalised(ft)).pow(2).mean(1, keepdim=True)
            total = total + (err * weight).sum() / weight.sum()
        return total / len(tf)

    def _ramp(self) -> float:
        if not self.warmup_steps or not self.training:
            return 1.0
        self.steps += 1
        return min(1.0, self.steps.item() / self.warmup_steps)

    def remove(self) -> None:
        self.tap.remove()


def detection_objective(cfg, student: nn.Module, teacher: nn.Module, data, warmup_steps: int = 0
                        ) -> DetectionDistillObjective:
    """The objective ``distill`` trains a detector with, from a DistillConfig's losses (kd: the head at matched
    locations; feature: the neck's levels, the default)."""
    from slimcv.models.detection import is_detector

    if not is_detector(teacher):
        raise SlimcvError(f"The teacher ({type(teacher).__name__}) is not a detector; distil a detector from a "
                          "detector trained on the same data (a slimcv detection run folder).")
    if getattr(cfg, "mode", "online") == "offline":
        raise SlimcvError("Offline (cached) distillation stores dense segmentation maps; a detector distils online "
                          "(mode: online).")
    if getattr(cfg, "unlabelled", None):
        raise SlimcvError("Distilling a detector on images without labels is not available; drop unlabelled, or "
                          "label those images.")
    given = "losses" in cfg.model_fields_set
    specs = [(s.name, s.weight, s.temperature, s.params) for s in cfg.losses] if given else [
        (n, w, None, {}) for n, w in DEFAULT_LOSSES]
    unknown = [name for name, *_ in specs if name not in ("kd", "feature")]
    if unknown:
        raise SlimcvError(f"Loss {unknown[0]!r} works on classification or segmentation outputs; a detector distils "
                          "with kd (its head at matched locations) and feature (its neck's levels).")
    weight = {name: w for name, w, *_ in specs}
    options = {k: v for name, _, _, params in specs for k, v in params.items() if k in ("foreground", "box")}
    temperature = next((t for name, _, t, _ in specs if name == "kd" and t), 1.0)
    sample = data.train[0][0][None].to(next(teacher.parameters()).device)
    student.to(sample.device)
    return DetectionDistillObjective(teacher, student, sample, alpha=cfg.alpha, kd_weight=weight.get("kd", 0.0),
                                     feature_weight=weight.get("feature", 0.0), temperature=temperature,
                                     warmup_steps=warmup_steps, **options)
