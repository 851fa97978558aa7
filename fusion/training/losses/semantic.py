"""Semantic terms: stability cross-entropy, dual-threshold pseudo labels, EMA prototypes and their margin."""

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...features.stability import STABILITY_WEIGHTS

IGNORE = -1


def stability_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor = None) -> torch.Tensor:
    """CE of (B, 3, h, w) logits against (B, h, w) labels (-1 ignored), optionally weighted per cell."""
    loss = F.cross_entropy(logits, labels.clamp_min(0), reduction="none")
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


def stability_weights_of(labels: torch.Tensor) -> torch.Tensor:
    """SFD2 keypoint weight of each labelled cell (0.1 / 0.5 / 1.0), 1 where unlabelled."""
    table = torch.tensor(STABILITY_WEIGHTS, device=labels.device)
    return torch.where(labels >= 0, table[labels.clamp_min(0)], torch.ones_like(labels, dtype=torch.float))


class PrototypeBank(nn.Module):
    """EMA prototypes (C, D) of the descriptors of each stability class; saved with checkpoints."""

    def __init__(self, classes: int = 3, dim: int = 64, momentum: float = 0.99):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("prototypes", torch.zeros(classes, dim))
        self.register_buffer("initialised", torch.zeros(classes, dtype=torch.bool))

    @torch.no_grad()
    def update(self, descriptors: torch.Tensor, labels: torch.Tensor) -> None:
        """descriptors (N, D) L2-normalised, labels (N,) with -1 ignored."""
        for c in range(len(self.prototypes)):
            members = descriptors[labels == c]
            if len(members) == 0:
                continue
            mean = F.normalize(members.mean(0), dim=0)
            if self.initialised[c]:
                mean = F.normalize(self.momentum * self.prototypes[c] + (1 - self.momentum) * mean, dim=0)
            self.prototypes[c] = mean
            self.initialised[c] = True

    def margin_loss(self, descriptors: torch.Tensor, labels: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
        """Hinge: cosine to the own prototype must beat the best other prototype by ``margin``."""
        keep = (labels >= 0) & self.initialised[labels.clamp_min(0)]
        if not keep.any():
            return descriptors.sum() * 0
        similarity = descriptors[keep] @ self.prototypes.t()
        own = similarity.gather(1, labels[keep][:, None])[:, 0]
        others = similarity.masked_fill(F.one_hot(labels[keep], len(self.prototypes)).bool(), -2).max(1).values
        return F.relu(margin - own + others).mean()
