"""Keypoint loss: 65-bin classification of each 8x8 cell against a teacher's keypoints."""

from typing import Optional

import torch
import torch.nn.functional as F


def teacher_cell_targets(teacher_logits: torch.Tensor, threshold: float = 0.05) -> torch.Tensor:
    """Per-cell target bin (B, h, w): the teacher's most likely pixel, or 64 (no keypoint) when unsure."""
    probs = teacher_logits.softmax(1)
    value, index = probs[:, :64].max(1)
    return torch.where(value > threshold, index, torch.full_like(index, 64))


def keypoint_loss(logits: torch.Tensor, targets: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cross-entropy of (B, 65, h, w) logits against (B, h, w) bins, optionally weighted per cell."""
    loss = F.cross_entropy(logits, targets, reduction="none")
    if weights is None:
        return loss.mean()
    return (loss * weights).sum() / weights.sum().clamp_min(1e-6)
