"""Held-out validation during training: descriptor nearest-neighbour accuracy and MMA@3 on warped pairs.

``val.root`` holds either homography sequences in the HPatches (``1.ppm``, ``H_1_2``) or Oxford
(``img1.png``, ``H1to2p``) layout, each image 1 paired with images 2..6, or any image folder, from
which ``val.pairs`` random warps are drawn once (seeded by ``val.seed``, so every validation scores
the same pairs). Sequence images are resized to at most ``val.max_size`` pixels (multiples of 32).

- ``nn_accuracy``: share of image-0 cells (1/8 resolution) whose nearest dense descriptor in image 1
  lies in the cell that holds their true correspondence;
- ``mma@3``: share of mutual-nearest-neighbour matches of the sparse keypoints (the inference path
  of ``fused_xfeat``, stability weighting included) within 3 px of the true correspondence.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..features.extractor import FusionExtractor
from ..features.fused import FusedXFeat
from ..features.matchers import mutual_nearest_neighbours
from ..features.stability import detection_inputs
from ..features.xfeat import detect_sparse
from ..store.io import IMAGE_SUFFIXES
from .data.geometry import cell_centres
from .data.synthetic import SyntheticPairs

METRICS = ("nn_accuracy", "mma@3")
# (first image, other image k, homography 1 -> k) file stems of the two homography layouts
SEQUENCE_LAYOUTS = (("1", "{}", "H_1_{}"), ("img1", "img{}", "H1to{}p"))


@dataclass
class ValidationPair:
    name: str
    image0: torch.Tensor  # (3, H, W) RGB in [0, 1]
    image1: torch.Tensor
    homography: np.ndarray  # image-0 pixels -> image-1 pixels


def image_with_stem(folder: Path, stem: str):
    return next((p for p in sorted(folder.glob(f"{stem}.*")) if p.suffix.lower() in IMAGE_SUFFIXES), None)


def resized(path: Path, max_size: int):
    """RGB image (3, H, W) resized to fit ``max_size`` with sides multiple of 32, and the pixel map (3, 3)."""
    image = cv2.imread(str(path))
    if image is None:
        raise ValueError(f"{path}: cannot decode validation image")
    height, width = image.shape[:2]
    scale = min(1.0, max_size / max(height, width))
    new_w, new_h = (max(32, int(round(side * scale / 32)) * 32) for side in (width, height))
    sx, sy = new_w / width, new_h / height
    image = cv2.resize(image[:, :, ::-1], (new_w, new_h), interpolation=cv2.INTER_AREA)
    to_resized = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])  # pixel centres kept
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255, to_resized


def sequence_pairs(root: Path, max_size: int) -> List[ValidationPair]:
    """Pairs (image 1, image k) of every HPatches- or Oxford-layout sequence in ``root`` or its subfolders."""
    pairs = []
    for folder in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        for first, other, matrix in SEQUENCE_LAYOUTS:
            path0 = image_with_stem(folder, first)
            others = [(image_with_stem(folder, other.format(k)), folder / matrix.format(k)) for k in range(2, 7)]
            others = [(path1, h_path) for path1, h_path in others if path1 is not None and h_path.is_file()]
            if path0 is None or not others:
                continue
            image0, scale0 = resized(path0, max_size)
            for path1, h_path in others:
                image1, scale1 = resized(path1, max_size)
                try:
                    homography = np.loadtxt(h_path).reshape(3, 3)
                except ValueError as error:
                    raise ValueError(f"{h_path}: not a 3x3 homography ({error})") from error
                pairs.append(ValidationPair(f"{folder.name}/{path1.stem}", image0, image1,
                                            scale1 @ homography @ np.linalg.inv(scale0)))
    return pairs


def warped_pairs(root: Path, count: int, size, seed: int) -> List[ValidationPair]:
    """``count`` fixed random warps (homography and photometric change) of the images of ``root``."""
    source = SyntheticPairs({"root": str(root), "size": list(size)}, seed)
    pairs = []
    for i in range(count):
        sample = source.sample(np.random.default_rng([seed, i]))
        pairs.append(ValidationPair(f"warp{i}", torch.from_numpy(sample["image0"]), torch.from_numpy(sample["image1"]),
                                    sample["homography"].astype(np.float64)))
    return pairs


def build_validation(conf: dict, training_root=None) -> List[ValidationPair]:
    """The validation pairs of the ``val`` config section; a clear error when they cannot be held out."""
    root = Path(conf["root"])
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: validation folder (val.root) not found")
    if training_root and root.resolve() == Path(training_root).resolve():
        raise ValueError(f"val.root={root} is the training folder (data.synthetic.root): validation must be held out")
    pairs = sequence_pairs(root, conf["max_size"])
    if not pairs:
        pairs = warped_pairs(root, conf["pairs"], conf["size"], conf["seed"])
    return pairs


def project(points: torch.Tensor, homography: np.ndarray) -> torch.Tensor:
    matrix = torch.as_tensor(homography, dtype=points.dtype, device=points.device)
    projected = F.pad(points, (0, 1), value=1.0) @ matrix.t()
    return projected[:, :2] / projected[:, 2:]


def descriptor_nn_accuracy(desc0: torch.Tensor, desc1: torch.Tensor, homography: np.ndarray) -> float:
    """Share of image-0 cells whose nearest image-1 descriptor (dense, (1, D, h, w)) is in the true cell."""
    (_, _, h0, w0), (_, _, h1, w1) = desc0.shape, desc1.shape
    centres = torch.from_numpy(cell_centres(h0 * 8, w0 * 8)).reshape(-1, 2).to(desc0.device)
    target = project(centres.double(), homography).float()
    inside = (target[:, 0] >= 0) & (target[:, 0] < w1 * 8) & (target[:, 1] >= 0) & (target[:, 1] < h1 * 8)
    if not inside.any():
        return 0.0
    true_cell = (target[inside, 1] // 8).long() * w1 + (target[inside, 0] // 8).long()
    d0 = F.normalize(desc0[0].flatten(1).t()[inside], dim=1)
    d1 = F.normalize(desc1[0].flatten(1).t(), dim=1)
    return float(((d0 @ d1.t()).argmax(1) == true_cell).float().mean())


@torch.no_grad()
def validate(fused: FusedXFeat, pairs: List[ValidationPair], device, max_keypoints: int = 1024,
             threshold_px: float = 3.0) -> Dict[str, float]:
    """Mean descriptor NN accuracy, MMA at ``threshold_px`` and matches per pair over ``pairs`` (model in eval mode)."""
    detection = FusionExtractor.default_conf
    accuracies, mmas, counts = [], [], []
    for pair in pairs:
        maps, keypoints = [], []
        for image in (pair.image0, pair.image1):
            image = image[None].to(device)
            out = fused(image)
            # the fused_xfeat inference path: the head's use as the extractor's, once the head is trained
            stability = detection_inputs(out["stability_logits"], detection["stability_use"], detection["unstable_cut"]) \
                if bool(fused.stability_trained) else {}
            features = detect_sparse(out, image.shape[-2:], max_keypoints, detection["detection_threshold"],
                                     detection["nms_kernel"], **stability)
            maps.append(out)
            keypoints.append(features)
        accuracies.append(descriptor_nn_accuracy(maps[0]["dense_descriptors"], maps[1]["dense_descriptors"],
                                                 pair.homography))
        matches0, _ = mutual_nearest_neighbours(keypoints[0]["descriptors"], keypoints[1]["descriptors"])
        index0 = (matches0 > -1).nonzero()[:, 0]
        points0 = keypoints[0]["keypoints"][index0].double()
        points1 = keypoints[1]["keypoints"][matches0[index0]].double()
        errors = (project(points0, pair.homography) - points1).norm(dim=1)
        mmas.append(float((errors <= threshold_px).float().mean()) if len(errors) else 0.0)
        counts.append(len(index0))
    return {"nn_accuracy": float(np.mean(accuracies)), f"mma@{threshold_px:g}": float(np.mean(mmas)),
            "matches": float(np.mean(counts))}
