"""XFeat's reliability loss: the reliability map predicts how well each descriptor matches."""

import torch
import torch.nn.functional as F


def reliability_loss(predicted: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
    """BCE between predicted reliability (N,) in (0, 1) and the (detached) match confidence (N,)."""
    return F.binary_cross_entropy(predicted.clamp(1e-6, 1 - 1e-6), confidence.clamp(0, 1))
