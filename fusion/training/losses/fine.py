"""XFeat* fine-offset loss: NLL of the 8x8 offset bin predicted by the refinement MLP."""

import torch
import torch.nn.functional as F


def offset_bins(offsets: torch.Tensor) -> torch.Tensor:
    """Bin (N,) of sub-cell offsets (N, 2) in pixels, centred as XFeat's soft-argmax (x - 4, y - 4)."""
    cells = (offsets + 4).floor().clamp(0, 7).long()
    return cells[:, 1] * 8 + cells[:, 0]


def fine_offset_nll(logits: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (N, 64) offset logits against the true offsets (N, 2)."""
    return F.cross_entropy(logits, offset_bins(offsets))
