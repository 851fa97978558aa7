"""Geometric consistency: bidirectional warp consistency of the detection maps."""

import torch
import torch.nn.functional as F

from .registry import register_term


def sample_at(maps: torch.Tensor, positions: torch.Tensor, size) -> torch.Tensor:
    """Bilinear samples (B, C, h, w) of ``maps`` at pixel ``positions`` (B, h, w, 2) of an image of ``size``."""
    height, width = size
    grid = torch.stack([2 * (positions[..., 0] + 0.5) / width - 1, 2 * (positions[..., 1] + 0.5) / height - 1], -1)
    return F.grid_sample(maps, grid, mode="bilinear", align_corners=False)


def warp_consistency(map0, map1, warp01, valid01, warp10, valid10, size) -> torch.Tensor:
    """L1 between each map and the other map sampled at the corresponding points, masked, both ways."""
    total, count = 0.0, 0.0
    for own, other, warp, valid in ((map0, map1, warp01, valid01), (map1, map0, warp10, valid10)):
        diff = (own - sample_at(other, warp, size)).abs().mean(1)
        total = total + (diff * valid).sum()
        count = count + valid.sum()
    return total / max(float(count), 1.0)


@register_term("geometric", inputs=("student", "warps"),
               heads=("fused.backbone.keypoint_head", "fused.backbone.heatmap_head"), detector=True)
def geometric_term(conf, student, warps):
    """Warp consistency of the detection maps: reliability and keypoint probability (1 - "no keypoint")."""
    detection = torch.cat([student["reliability"], 1 - student["keypoint_logits"].softmax(1)[:, 64:]], 1)
    b = len(detection) // 2
    size = (detection.shape[-2] * 8, detection.shape[-1] * 8)
    return warp_consistency(detection[:b], detection[b:], warps["warp01"], warps["valid01"].float(),
                            warps["warp10"], warps["valid10"].float(), size)
