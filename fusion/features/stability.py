"""SFD2-style stability head: three classes (unstable, short-term, stable) per 1/8 cell.

The head reads the backbone's 64-d descriptor map (and, with ``colour``, each cell's mean colour: XFeat
sees grey levels) through a k x k convolution and, with ``context``, the 1/16 and 1/32 maps (1x1
convolutions at their own resolution, upsampled): telling sky from a plain wall or a tree from a facade
needs more than one cell. How detection uses the classes is the extractor's ``stability_use``: by
default the keypoints of cells with P(unstable) > 0.9 (``unstable_cells``) are dropped; with
``weight``, SFD2's expected weight sum_k p_k * w_k (class values 0.1 / 0.5 / 1.0) multiplies the keypoint
heatmap before NMS and the detection threshold, once (``fusion.features.xfeat.detect_sparse``). The
expectation, not the argmax class, so that an uncertain cell is not cut to a tenth.
"""

from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

STABILITY_CLASSES = ("unstable", "short_term", "stable")
STABILITY_WEIGHTS = (0.1, 0.5, 1.0)  # SFD2's per-class keypoint weights
CONTEXT_MAPS = ("map_1_16", "map_1_32")


class StabilityHead(nn.Module):
    """3-class stability logits (B, 3, h, w) from the backbone's maps."""

    default_conf = {
        "width": 32,  # channels of the hidden layers
        "kernel_size": 3,  # of the two hidden convolutions (1: the original per-cell head)
        "context": True,  # also read the 1/16 and 1/32 maps
        "colour": True,  # also read each cell's mean colour (XFeat itself sees grey levels only)
    }

    def __init__(self, conf: dict = None):
        super().__init__()
        self.conf = conf = {**self.default_conf, **(conf or {})}
        width, kernel = conf["width"], conf["kernel_size"]
        self.local = nn.Conv2d(64 + 3 * conf["colour"], width, kernel, padding=kernel // 2)
        self.context = nn.ModuleDict({name: nn.Conv2d(64, width, 1, bias=False) for name in CONTEXT_MAPS}
                                     if conf["context"] else {})
        self.layers = nn.Sequential(
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, kernel, padding=kernel // 2),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, len(STABILITY_CLASSES), 1),
        )

    def forward(self, maps: Dict[str, torch.Tensor]) -> torch.Tensor:
        local = maps["dense_descriptors"]
        if self.conf["colour"]:
            local = torch.cat([local, maps["colour_1_8"].to(local.dtype)], 1)
        features = self.local(local)
        for name, project in self.context.items():
            features = features + F.interpolate(project(maps[name]), features.shape[-2:], mode="bilinear",
                                                align_corners=False)
        return self.layers(features)


def stability_weight(logits: torch.Tensor) -> torch.Tensor:
    """SFD2 keypoint weight (B, 1, h, w) of each cell: its expected class value sum_k p_k * w_k."""
    weights = torch.tensor(STABILITY_WEIGHTS, device=logits.device, dtype=torch.float32)
    return torch.einsum("bkhw,k->bhw", logits.float().softmax(1), weights)[:, None]


def unstable_cells(logits: torch.Tensor, cut: float) -> torch.Tensor:
    """1 where a cell is confidently unstable, P(unstable) > ``cut``, else 0 (B, 1, h, w)."""
    return (logits.float().softmax(1)[:, :1] > cut).float()


STABILITY_USES = ("drop", "demote", "weight")


def detection_inputs(logits: torch.Tensor, use: str, cut: float) -> Dict[str, torch.Tensor]:
    """What the head's logits give ``detect_sparse`` for ``use``: ``drop``, a weight of 0 on confidently
    unstable cells (P(unstable) > ``cut``) and 1 elsewhere; ``demote``, those cells as the ones to take last;
    ``weight``, SFD2's expected weight."""
    if use == "weight":
        return {"stability": stability_weight(logits)}
    unstable = unstable_cells(logits, cut)
    return {"stability": 1 - unstable} if use == "drop" else {"demoted": unstable}


def weight_heatmap(heatmap: torch.Tensor, cell_weight: torch.Tensor) -> torch.Tensor:
    """Full-resolution heatmap (B, 1, 8h, 8w) with every pixel multiplied by its cell's weight (B, 1, h, w)."""
    return heatmap * cell_weight.to(heatmap.dtype).repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)
