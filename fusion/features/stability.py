"""SFD2-style stability head: three classes (unstable, short-term, stable) on the 1/8 map.

As in SFD2, a cell's class value (0.1 / 0.5 / 1.0) multiplies the keypoint heatmap before NMS and
the detection threshold (``fusion.features.xfeat.detect_sparse``), so keypoints on unstable things
(sky, people, cars) must be ten times as confident to be detected, and lose the top-k to stable ones.
"""

import torch
from torch import nn

STABILITY_CLASSES = ("unstable", "short_term", "stable")
STABILITY_WEIGHTS = (0.1, 0.5, 1.0)  # SFD2's per-class keypoint weights


class StabilityHead(nn.Module):
    """Predicts 3-class stability logits from the student's 64-d descriptor map."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(channels, channels, 1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, len(STABILITY_CLASSES), 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


def stability_weight(logits: torch.Tensor) -> torch.Tensor:
    """SFD2 keypoint weight (B, 1, h, w) of each cell: the value of its predicted class."""
    weights = torch.tensor(STABILITY_WEIGHTS, device=logits.device, dtype=torch.float32)
    return weights[logits.argmax(1)][:, None]


def weight_heatmap(heatmap: torch.Tensor, cell_weight: torch.Tensor) -> torch.Tensor:
    """Full-resolution heatmap (B, 1, 8h, 8w) with every pixel multiplied by its cell's weight (B, 1, h, w)."""
    return heatmap * cell_weight.to(heatmap.dtype).repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)
