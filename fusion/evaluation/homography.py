"""Homography benchmark (D2-Net protocol): MMA at 1..10 px and homography accuracy.

Reads HPatches (``v_*/i_*`` folders with 1.ppm..6.ppm, H_1_2..H_1_6) and the Oxford affine layout
(img1..img6, H1to2p..H1to6p). Each sequence pairs image 1 with images 2..6.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import cv2
import numpy as np
from tqdm import tqdm

from .adapters import numpy_matcher

THRESHOLDS = tuple(range(1, 11))
# D2-Net leaves out these high-resolution HPatches sequences.
EXCLUDED_HPATCHES = ("i_contruction", "i_crownnight", "i_dc", "i_pencils", "i_whitebuilding",
                     "v_artisans", "v_astronautis", "v_talent")
OXFORD_SPLITS = {"leuven": "illumination", "bikes": "blur", "trees": "blur", "ubc": "jpeg",
                 "boat": "viewpoint", "wall": "viewpoint", "graf": "viewpoint", "bark": "viewpoint"}


@dataclass
class Sequence:
    name: str
    split: str
    images: List[Path]  # image 1 first
    homographies: List[np.ndarray]  # H mapping image 1 to image k, for k = 2..


def find_image(folder: Path, stem: str) -> Optional[Path]:
    for suffix in (".ppm", ".png", ".jpg", ".pgm"):
        if (folder / f"{stem}{suffix}").exists():
            return folder / f"{stem}{suffix}"
    return None


def read_sequence(folder: Path) -> Optional[Sequence]:
    """A sequence in the HPatches or Oxford layout, or None when ``folder`` is neither."""
    for first, other, homography in (("1", "{}", "H_1_{}"), ("img1", "img{}", "H1to{}p")):
        if find_image(folder, first) is None:
            continue
        images, homographies = [find_image(folder, first)], []
        for k in range(2, 7):
            path, h_path = find_image(folder, other.format(k)), folder / homography.format(k)
            if path is None or not h_path.exists():
                continue
            try:
                matrix = np.loadtxt(h_path).reshape(3, 3)
            except ValueError as error:
                raise ValueError(f"{h_path}: not a 3x3 homography ({error})") from error
            images.append(path)
            homographies.append(matrix)
        if len(images) < 2:
            raise ValueError(f"{folder}: no image pair with a homography")
        name = folder.name
        split = {"i": "illumination", "v": "viewpoint"}.get(name[:1]) if name[1:2] == "_" else None
        return Sequence(name, split or OXFORD_SPLITS.get(name, "other"), images, homographies)
    return None


def read_sequences(root: Path, exclude=EXCLUDED_HPATCHES) -> List[Sequence]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: homography dataset folder not found")
    single = read_sequence(root)
    if single is not None:
        return [single]
    sequences = [s for d in sorted(root.iterdir()) if d.is_dir() and d.name not in exclude
                 for s in [read_sequence(d)] if s is not None]
    if not sequences:
        raise FileNotFoundError(f"{root}: no HPatches (1.ppm, H_1_2) or Oxford (img1, H1to2p) sequences")
    return sequences


def warp_points(points: np.ndarray, homography: np.ndarray) -> np.ndarray:
    homogeneous = np.hstack([points, np.ones((len(points), 1))]) @ homography.T
    return homogeneous[:, :2] / homogeneous[:, 2:]


def matching_accuracy(points0: np.ndarray, points1: np.ndarray, homography: np.ndarray,
                      thresholds=THRESHOLDS) -> np.ndarray:
    """Fraction of matches whose reprojection error under ``homography`` is <= each threshold (px)."""
    if len(points0) == 0:
        return np.zeros(len(thresholds))
    errors = np.linalg.norm(warp_points(points0, homography) - points1, axis=1)
    return np.array([(errors <= t).mean() for t in thresholds])


def corner_error(estimate: Optional[np.ndarray], truth: np.ndarray, width: int, height: int) -> float:
    """Mean distance of the image-1 corners mapped by the estimated and true homographies."""
    if estimate is None:
        return float("inf")
    corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], float)
    return float(np.linalg.norm(warp_points(corners, estimate) - warp_points(corners, truth), axis=1).mean())


def evaluate(sequences: List[Sequence], extractor: Callable, matcher: Optional[Callable] = None,
             ransac_threshold: float = 3.0) -> Dict:
    """MMA@1..10 (all pairs and per split), features, matches and homography accuracy (default matcher: MNN)."""
    matcher = matcher or numpy_matcher("xfeat_mnn")
    per_pair = []
    for sequence in tqdm(sequences, desc="homography", unit="seq"):
        image0 = cv2.imread(str(sequence.images[0]))[:, :, ::-1]
        features0 = extractor(image0)
        for path, truth in zip(sequence.images[1:], sequence.homographies):
            features1 = extractor(cv2.imread(str(path))[:, :, ::-1])
            index0, index1 = matcher(features0, features1)
            points0, points1 = features0["keypoints"][index0], features1["keypoints"][index1]
            estimate = None
            if len(points0) >= 4:
                estimate, _ = cv2.findHomography(points0, points1, cv2.RANSAC, ransac_threshold)
            per_pair.append({
                "split": sequence.split,
                "mma": matching_accuracy(points0, points1, truth),
                "features": (len(features0["keypoints"]) + len(features1["keypoints"])) / 2,
                "matches": len(points0),
                "corner_error": corner_error(estimate, truth, image0.shape[1], image0.shape[0]),
            })
    return summarize(per_pair)


def summarize(per_pair: List[Dict]) -> Dict:
    def block(pairs):
        mma = np.mean([p["mma"] for p in pairs], axis=0)
        errors = np.array([p["corner_error"] for p in pairs])
        out = {f"mma@{t}": round(float(v), 4) for t, v in zip(THRESHOLDS, mma)}
        out.update({f"h_acc@{t}px": round(float((errors <= t).mean()), 4) for t in (1, 3, 5)})
        out["mean_corner_error"] = round(float(np.mean(np.minimum(errors, 1e3))), 3)
        out["num_features"] = round(float(np.mean([p["features"] for p in pairs])), 1)
        out["num_matches"] = round(float(np.mean([p["matches"] for p in pairs])), 1)
        out["pairs"] = len(pairs)
        return out

    result = block(per_pair)
    for split in sorted({p["split"] for p in per_pair}):
        result[split] = block([p for p in per_pair if p["split"] == split])
    return result
