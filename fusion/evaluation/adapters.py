"""The project's extractors and matchers (``fusion.features``' registry and confs) as numpy callables.

``numpy_extractor(name)``: ``RGB uint8 (H, W, 3) -> {'keypoints': (N, 2), 'descriptors': (N, D),
'image_size': (W, H)}`` with L2-normalised descriptors and keypoints in the image's pixels.
``numpy_matcher(name)``: ``(features0, features1) -> (index0, index1)``.
"""

import copy
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch

from ..features import EXTRACTORS, MATCHERS, build_model, extract, match

Extractor = Callable[[np.ndarray], Dict[str, np.ndarray]]
Matcher = Callable[[Dict[str, np.ndarray], Dict[str, np.ndarray]], Tuple[np.ndarray, np.ndarray]]


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255


def numpy_extractor(name: str, max_keypoints: int = 4096, checkpoint: Optional[str] = None) -> Extractor:
    """The extractor of conf ``name`` of ``fusion.features.extract.confs``; ``run.model`` is the model."""
    if name not in extract.confs:
        raise ValueError(f"unknown extractor {name!r}; known: {sorted(extract.confs)}")
    conf = copy.deepcopy(extract.confs[name]["model"])
    conf["max_keypoints"] = max_keypoints
    if checkpoint:
        conf["checkpoint"] = str(checkpoint)
    model = build_model(conf, EXTRACTORS)

    def run(image):
        pred = model({"image": to_tensor(image)})
        descriptors = torch.nn.functional.normalize(pred["descriptors"][0].t().float(), dim=1)
        return {"keypoints": pred["keypoints"][0].numpy(), "descriptors": descriptors.numpy(),
                "image_size": np.array([image.shape[1], image.shape[0]])}

    run.model = model
    return run


def numpy_matcher(name: str) -> Matcher:
    """The matcher of conf ``name`` of ``fusion.features.match.confs``."""
    if name not in match.confs:
        raise ValueError(f"unknown matcher {name!r}; known: {sorted(match.confs)}")
    return model_matcher(build_model(match.confs[name]["model"], MATCHERS))


def model_matcher(model: torch.nn.Module) -> Matcher:
    """A matcher model (hloc's interface) as a numpy matcher."""
    def run(features0, features1):
        data = {}
        for i, features in enumerate((features0, features1)):
            data[f"keypoints{i}"] = torch.from_numpy(features["keypoints"]).float()[None]
            data[f"descriptors{i}"] = torch.from_numpy(features["descriptors"]).float().t()[None]
            data[f"image_size{i}"] = torch.as_tensor(features["image_size"]).float()[None]
        matches = model(data)["matches0"][0].numpy()
        valid = matches > -1
        return np.flatnonzero(valid), matches[valid]

    run.model = model
    return run


def parameter_count(extractor: Extractor) -> int:
    return sum(p.numel() for p in extractor.model.parameters())
