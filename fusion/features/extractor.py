"""The feature extractor behind the ``fused_xfeat``, ``xfeat`` and ``xfeat_star`` confs.

Same interface as an hloc extractor: ``model({'image': (1, C, H, W) in [0, 1]})`` returns
keypoints (1, N, 2) in the input's pixels, scores (1, N) and descriptors (1, D, N).
"""

import logging
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from .fused import load_checkpoint, packaged_checkpoint
from .stability import STABILITY_USES, detection_inputs
from .xfeat import detect_dense, detect_sparse, load_xfeat_backbone, official_weights, resize_to_multiple_of_32

logger = logging.getLogger("fusion")
MODES = ("sparse", "semidense")
FUSED_ONLY_KEYS = ("stability_use", "unstable_cut")  # settings that change nothing without a stability head


class FusionExtractor(nn.Module):
    default_conf = {
        "name": "fusion_xfeat",
        "mode": "sparse",  # 'sparse' (XFeat) or 'semidense' (XFeat*)
        "checkpoint": None,  # a fused checkpoint; None: official XFeat weights (+ the packaged head when fused)
        "fused": False,  # stability-aware detection (fused_xfeat): needs a trained stability head
        # How fused detection uses stability (docs/stability.md measures each): 'drop' removes the keypoints
        # of cells with P(unstable) > unstable_cut and fills the top-k elsewhere; 'demote' ranks them after
        # all others; 'weight' multiplies the heatmap by SFD2's expected weight before NMS.
        "stability_use": "drop",
        "unstable_cut": 0.9,
        "max_keypoints": 4096,
        "detection_threshold": 0.05,
        "nms_kernel": 5,
        "scales": (0.6, 1.3),  # XFeat* image scales ...
        "scale_shares": (0.2, 0.8),  # ... and the share of max_keypoints each contributes
    }

    @classmethod
    def checkpoint_of(cls, conf: dict):
        """The fused checkpoint a conf runs: its own, else the packaged CamVid head when fused, else None."""
        conf = {**cls.default_conf, **conf}
        return Path(conf["checkpoint"]) if conf["checkpoint"] else packaged_checkpoint() if conf["fused"] else None

    @classmethod
    def weight_files(cls, conf: dict) -> List[Path]:
        checkpoint = cls.checkpoint_of(conf)
        return [official_weights(), checkpoint] if checkpoint else [official_weights()]

    @classmethod
    def output_spec(cls, conf: dict) -> dict:
        return {"descriptor_dim": 64, "semidense": {**cls.default_conf, **conf}["mode"] == "semidense"}

    def __init__(self, conf: dict = None):
        super().__init__()
        self.conf = conf = {**self.default_conf, **(conf or {})}
        if conf["mode"] not in MODES:
            raise ValueError(f"extractor mode {conf['mode']!r} is not one of {MODES}")
        if conf["stability_use"] not in STABILITY_USES:
            raise ValueError(f"stability_use {conf['stability_use']!r} is not one of {STABILITY_USES}")
        checkpoint = self.checkpoint_of(conf)
        if checkpoint:
            self.fused = load_checkpoint(checkpoint)
            self.backbone = self.fused.backbone
        else:
            self.fused = None
            self.backbone = load_xfeat_backbone()
        # A Python bool read once, since torch.export cannot branch on a tensor's value.
        self.uses_stability = conf["fused"] and self.fused is not None
        if self.uses_stability and not bool(self.fused.stability_trained):
            raise ValueError(f"{checkpoint}: its stability head is untrained, so it is no fused model; extract with "
                             "--conf xfeat --checkpoint (its backbone alone) or train the head (--stage camvid)")
        self.eval()

    @property
    def fine_matcher(self) -> nn.Module:
        """XFeat*'s refinement MLP (for pairwise refinement of semi-dense matches)."""
        return self.backbone.fine_matcher

    def maps(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.backbone.forward_maps(image)

    def stability_inputs(self, maps: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """What the stability head gives ``detect_sparse``: a cell weight or the demoted cells; nothing unfused."""
        if not self.uses_stability:
            return {}
        return detection_inputs(self.fused.stability_head(maps), self.conf["stability_use"], self.conf["unstable_cut"])

    def extract_sparse(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        resized, ratio = resize_to_multiple_of_32(image)
        maps = self.maps(resized)
        pred = detect_sparse(
            maps, resized.shape[-2:], self.conf["max_keypoints"],
            self.conf["detection_threshold"], self.conf["nms_kernel"], **self.stability_inputs(maps),
        )
        pred["keypoints"] = pred["keypoints"] * ratio
        return pred

    def extract_semidense(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        parts = []
        for scale, share in zip(self.conf["scales"], self.conf["scale_shares"]):
            scaled = F.interpolate(image, scale_factor=scale, mode="bilinear", align_corners=False)
            resized, ratio = resize_to_multiple_of_32(scaled)
            pred = detect_dense(self.maps(resized), int(self.conf["max_keypoints"] * share))
            pred["keypoints"] = pred["keypoints"] * ratio / scale
            pred["scales"] = torch.full_like(pred["scores"], 1 / scale)
            parts.append(pred)
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    @torch.inference_mode()
    def forward(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        image = data["image"]
        if image.dim() != 4 or image.shape[0] != 1:
            raise ValueError(f"expected one image of shape (1, C, H, W), got {tuple(image.shape)}")
        extract = self.extract_sparse if self.conf["mode"] == "sparse" else self.extract_semidense
        pred = extract(image.float())
        pred["descriptors"] = pred["descriptors"].t()
        return {k: v[None] for k, v in pred.items()}
