"""XFeat* fine-offset loss: NLL of the 8x8 offset bin predicted by the refinement MLP.

The MLP's 64 logits are an 8x8 grid over offsets -4 .. 3 px in x and y; inference (``refine_semidense_matches``)
moves the image-0 cell corner by their soft-argmax. A label is therefore the bin whose value is nearest
to the true offset: decoding it is off by at most 0.5 px per axis.
"""

import torch
import torch.nn.functional as F

from .registry import register_term

BIN_VALUES = (-4, 3)  # the offsets, in pixels, of the first and last bin on each axis


def offset_bins(offsets: torch.Tensor) -> torch.Tensor:
    """Bin (N,) nearest to each sub-cell offset (N, 2) in pixels (x, y), as XFeat*'s soft-argmax decodes it."""
    cells = (offsets - BIN_VALUES[0] + 0.5).floor().clamp(0, BIN_VALUES[1] - BIN_VALUES[0]).long()
    return cells[:, 1] * 8 + cells[:, 0]


def representable(offsets: torch.Tensor) -> torch.Tensor:
    """Which offsets (N, 2) lie within half a pixel of the bins' range, so that a bin decodes them to 0.5 px."""
    return ((offsets >= BIN_VALUES[0] - 0.5) & (offsets < BIN_VALUES[1] + 0.5)).all(1)


def fine_offset_nll(logits: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (N, 64) offset logits against the true offsets (N, 2)."""
    return F.cross_entropy(logits.float(), offset_bins(offsets))


@register_term("fine", inputs=("fine_logits", "fine_targets"), heads=("fused.backbone.fine_matcher",))
def fine_term(conf, fine_logits, fine_targets):
    if fine_targets is None:
        return None
    return fine_offset_nll(fine_logits, fine_targets.offsets)
