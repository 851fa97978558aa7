"""Semantic terms: stability cross-entropy, dual-threshold pseudo labels, EMA prototypes and their margin.

The stability weight is applied once, at inference (``fusion.features.stability``): the detector keeps
learning the plain keypoint target, as scaling the target too would cut an unstable cell to 0.1 x 0.1.
"""

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...features.xfeat import keypoint_heatmap
from ..distributed import all_reduce_sum
from .registry import register_term

IGNORE = -1


def stability_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor = None) -> torch.Tensor:
    """CE of (B, 3, h, w) logits against (B, h, w) labels (-1 ignored), optionally weighted per cell."""
    loss = F.cross_entropy(logits.float(), labels.clamp_min(0), reduction="none")
    mask = (labels != IGNORE).float() * (1.0 if weights is None else weights)
    return (loss * mask).sum() / mask.sum().clamp_min(1e-6)


def pseudo_labels(teacher_logits: torch.Tensor, high: float = 0.8, low: float = 0.5,
                  mid_weight: float = 0.5) -> Tuple[torch.Tensor, torch.Tensor]:
    """Labels and weights from teacher stability logits: conf >= high -> 1, [low, high) -> mid, < low -> ignored."""
    confidence, labels = teacher_logits.softmax(1).max(1)
    weights = torch.where(confidence >= high, torch.ones_like(confidence),
                          torch.where(confidence >= low, torch.full_like(confidence, mid_weight),
                                      torch.zeros_like(confidence)))
    return torch.where(weights > 0, labels, torch.full_like(labels, IGNORE)), weights


class PrototypeBank(nn.Module):
    """EMA prototypes (C, D) of the descriptors of each stability class; saved with checkpoints.

    Under DDP every rank folds in the same all-reduced class means, so the banks stay identical.
    """

    def __init__(self, classes: int = 3, dim: int = 64, momentum: float = 0.99):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("prototypes", torch.zeros(classes, dim))
        self.register_buffer("initialised", torch.zeros(classes, dtype=torch.bool))

    @torch.no_grad()
    def update(self, descriptors: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor = None) -> None:
        """descriptors (N, D) L2-normalised, labels (N,) with -1 ignored, optional weights (N,)."""
        keep = labels >= 0
        weights = (torch.ones_like(labels, dtype=descriptors.dtype) if weights is None else weights.float())[keep]
        members = F.one_hot(labels[keep], len(self.prototypes)).to(descriptors.dtype) * weights[:, None]
        totals = torch.cat([members.t() @ descriptors[keep], members.sum(0)[:, None]], 1)  # (C, D + 1)
        totals = all_reduce_sum(totals)
        if not torch.isfinite(totals).all():
            return
        for c in (totals[:, -1] > 0).nonzero()[:, 0].tolist():
            mean = F.normalize(totals[c, :-1], dim=0)
            if self.initialised[c]:
                mean = F.normalize(self.momentum * self.prototypes[c] + (1 - self.momentum) * mean, dim=0)
            self.prototypes[c] = mean
            self.initialised[c] = True

    def margin_loss(self, descriptors: torch.Tensor, labels: torch.Tensor, margin: float = 0.2,
                    weights: torch.Tensor = None) -> torch.Tensor:
        """Hinge: cosine to the own prototype must beat the best other prototype by ``margin`` (weighted mean)."""
        keep = (labels >= 0) & self.initialised[labels.clamp_min(0)]
        if not keep.any():
            return descriptors.sum() * 0
        similarity = descriptors[keep] @ self.prototypes.t()
        own = similarity.gather(1, labels[keep][:, None])[:, 0]
        others = similarity.masked_fill(F.one_hot(labels[keep], len(self.prototypes)).bool(), -2).max(1).values
        hinge = F.relu(margin - own + others)
        if weights is None:
            return hinge.mean()
        weights = weights[keep].float()
        return (hinge * weights).sum() / weights.sum().clamp_min(1e-6)


def top_scoring_cells(student: dict, labels: torch.Tensor, count: int) -> torch.Tensor:
    """Flat indices into (B * h * w) of the ``count`` labelled cells of each image that the student's
    detector scores highest (keypoint probability x reliability): SFD2 shapes prototypes on keypoints."""
    heat = keypoint_heatmap(student["keypoint_logits"].detach())
    b, _, h, w = student["reliability"].shape
    cell_peak = F.max_pool2d(heat, 8)[:, 0]
    score = (cell_peak * student["reliability"].detach()[:, 0]).masked_fill(labels < 0, -1).flatten(1)
    top = score.topk(min(count, h * w), dim=1)
    chosen = top.indices + torch.arange(b, device=score.device)[:, None] * h * w
    return chosen[top.values >= 0]


@register_term("stability", inputs=("student", "stability_labels"), heads=("fused.stability_head",))
def stability_term(conf, student, stability_labels):
    labels, weights = stability_labels
    return stability_cross_entropy(student["stability_logits"], labels, weights)


@register_term("prototype", inputs=("student", "descriptors", "stability_labels", "prototype_bank"))
def prototype_term(conf, student, descriptors, stability_labels, prototype_bank):
    labels, weights = stability_labels
    chosen = top_scoring_cells(student, labels, conf["prototype"]["max_points"])
    flat = descriptors.permute(0, 2, 3, 1).reshape(-1, descriptors.shape[1])[chosen]
    flat_labels, flat_weights = labels.flatten()[chosen], weights.flatten()[chosen]
    prototype_bank.update(flat.detach(), flat_labels, flat_weights)
    return prototype_bank.margin_loss(flat, flat_labels, conf["prototype"]["margin"], flat_weights)
