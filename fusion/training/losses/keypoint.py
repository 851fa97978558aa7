"""Keypoint loss: each 8x8 cell's 65-bin distribution (64 pixels + "no keypoint") against a teacher's."""

from typing import Optional

import torch
import torch.nn.functional as F

from .registry import register_term

NO_KEYPOINT = 64


def teacher_cell_targets(teacher_logits: torch.Tensor) -> torch.Tensor:
    """The teacher's 65-bin distribution (B, 65, h, w) of each cell, as the target.

    Soft targets (distillation) rather than the teacher's thresholded arg-max: a student that already
    equals its teacher (fine-tuning XFeat against XFeat) gets exactly zero gradient from this term.
    """
    return teacher_logits.detach().float().softmax(1)


def keypoint_loss(logits: torch.Tensor, targets: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cross-entropy of (B, 65, h, w) logits against (B, 65, h, w) target distributions, mean over the
    cells (or over the ``valid`` (B, h, w) ones)."""
    loss = -(targets * F.log_softmax(logits.float(), 1)).sum(1)
    if valid is None:
        return loss.mean()
    return (loss * valid).sum() / valid.sum().clamp_min(1)


@register_term("keypoint", inputs=("student", "keypoint_targets"), heads=("fused.backbone.keypoint_head",),
               detector=True)
def keypoint_term(conf, student, keypoint_targets):
    return keypoint_loss(student["keypoint_logits"], keypoint_targets)
