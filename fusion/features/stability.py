"""SFD2-style stability head: three classes (unstable, short-term, stable) on the 1/8 map."""

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
    """Expected SFD2 weight (B, 1, h, w) under the predicted class probabilities."""
    weights = torch.tensor(STABILITY_WEIGHTS, device=logits.device, dtype=logits.dtype)
    return (logits.softmax(1) * weights[None, :, None, None]).sum(1, keepdim=True)
