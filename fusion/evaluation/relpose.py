"""Relative pose benchmark: AUC of the pose error at 5/10/20 degrees from essential matrices.

Pairs come from MegaDepth-1500's scene_info .npz files (LoFTR/XFeat format: ``image_paths``,
``intrinsics``, ``poses``, ``pair_infos``) or from a text file with one pair per line:
``name0 name1 rot0 rot1 K0(9) K1(9) T_0to1(16)`` (rot: EXIF rotation in multiples of 90 degrees).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import cv2
import numpy as np
from tqdm import tqdm

AUC_THRESHOLDS = (5, 10, 20)


@dataclass
class PosePair:
    name0: str
    name1: str
    K0: np.ndarray
    K1: np.ndarray
    T_0to1: np.ndarray  # 4x4, camera 0 to camera 1
    rot0: int = 0
    rot1: int = 0


def read_text_pairs(path: Path) -> List[PosePair]:
    pairs = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        words = line.split()
        if len(words) != 38:
            raise ValueError(f"{path}:{number}: expected 38 fields (name0 name1 rot0 rot1 K0 K1 T_0to1), "
                             f"got {len(words)}")
        values = np.array(words[4:], float)
        pairs.append(PosePair(words[0], words[1], values[:9].reshape(3, 3), values[9:18].reshape(3, 3),
                              values[18:].reshape(4, 4), int(words[2]), int(words[3])))
    if not pairs:
        raise ValueError(f"{path}: no pairs")
    return pairs


def read_scene_info(path: Path) -> List[PosePair]:
    """Pairs of one MegaDepth scene_info .npz (poses are world-to-camera 4x4)."""
    info = np.load(path, allow_pickle=True)
    for key in ("image_paths", "intrinsics", "poses", "pair_infos"):
        if key not in info:
            raise ValueError(f"{path}: not a scene_info file (no {key!r})")
    pairs = []
    for pair_info in info["pair_infos"]:
        i, j = pair_info[0]
        T_0to1 = info["poses"][j] @ np.linalg.inv(info["poses"][i])
        pairs.append(PosePair(str(info["image_paths"][i]), str(info["image_paths"][j]),
                              info["intrinsics"][i], info["intrinsics"][j], T_0to1))
    return pairs


def read_pairs(path: Path) -> List[PosePair]:
    path = Path(path)
    if path.is_dir():
        return [p for f in sorted(path.glob("*.npz")) for p in read_scene_info(f)]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pairs file not found")
    return read_scene_info(path) if path.suffix == ".npz" else read_text_pairs(path)


def angle_between(a: np.ndarray, b: np.ndarray) -> float:
    cos = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def relative_pose_error(T_0to1: np.ndarray, R: np.ndarray, t: np.ndarray) -> float:
    """max(rotation error, translation-direction error) in degrees (translation sign-agnostic)."""
    error_t = angle_between(t, T_0to1[:3, 3])
    error_t = min(error_t, 180 - error_t)
    cos = (np.trace(R.T @ T_0to1[:3, :3]) - 1) / 2
    error_r = float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return max(error_t, error_r)


def pose_auc(errors: Sequence[float], thresholds=AUC_THRESHOLDS) -> Dict[str, float]:
    """Area under the recall-vs-error curve up to each threshold, normalised to [0, 1]."""
    errors = np.sort(np.asarray(errors, float))
    recall = (np.arange(len(errors)) + 1) / len(errors)
    errors, recall = np.r_[0.0, errors], np.r_[0.0, recall]
    aucs = {}
    for threshold in thresholds:
        last = np.searchsorted(errors, threshold)
        x = np.r_[errors[:last], threshold]
        y = np.r_[recall[:last], recall[last - 1]]
        aucs[f"auc@{threshold}"] = float(np.trapezoid(y, x) / threshold)
    return aucs


def unrotate(points: np.ndarray, rotation: int, size_wh) -> np.ndarray:
    """Points of an image turned clockwise ``rotation`` x 90 degrees, back in the original image's pixels."""
    width, height = size_wh  # of the original image
    for step in reversed(range(rotation % 4)):
        # undo turn number `step`; before it the image had been turned `step` times
        height_before = width if step % 2 else height
        points = np.stack([points[:, 1], height_before - 1 - points[:, 0]], axis=1)
    return points


def estimate_pose(points0, points1, K0, K1, threshold_px: float = 0.5):
    """(R, t) from an essential matrix on normalised points, or None."""
    if len(points0) < 5:
        return None
    norm0 = (points0 - K0[[0, 1], [2, 2]]) / K0[[0, 1], [0, 1]]
    norm1 = (points1 - K1[[0, 1], [2, 2]]) / K1[[0, 1], [0, 1]]
    threshold = threshold_px / np.mean([K0[0, 0], K0[1, 1], K1[0, 0], K1[1, 1]])
    E, mask = cv2.findEssentialMat(norm0, norm1, np.eye(3), cv2.RANSAC, 0.99999, threshold)
    if E is None:
        return None
    best = None
    for candidate in np.split(E, len(E) // 3):
        inliers, R, t, _ = cv2.recoverPose(candidate, norm0, norm1, np.eye(3), 1e9, mask=mask)
        if best is None or inliers > best[0]:
            best = (inliers, R, t[:, 0])
    return best[1], best[2]


def evaluate(pairs: List[PosePair], images: Path, extractor: Callable, matcher: Callable,
             resize_max: int = 1200) -> Dict:
    errors, matches = [], []
    for pair in tqdm(pairs, desc="relpose", unit="pair"):
        features = []
        for name, rotation in ((pair.name0, pair.rot0), (pair.name1, pair.rot1)):
            path = Path(images) / name
            original = cv2.imread(str(path))
            if original is None:
                raise FileNotFoundError(f"{path}: image missing or unreadable")
            image = np.ascontiguousarray(np.rot90(original[:, :, ::-1], k=-rotation))
            scale = min(1.0, resize_max / max(image.shape[:2]))
            if scale < 1:
                image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            feats = extractor(image)
            feats["keypoints_original"] = unrotate((feats["keypoints"] + 0.5) / scale - 0.5, rotation,
                                                   original.shape[1::-1])
            features.append(feats)
        index0, index1 = matcher(*features)
        points0 = features[0]["keypoints_original"][index0]
        points1 = features[1]["keypoints_original"][index1]
        estimate = estimate_pose(points0, points1, pair.K0, pair.K1)
        errors.append(relative_pose_error(pair.T_0to1, *estimate) if estimate else 180.0)
        matches.append(len(index0))
    result = {k: round(v, 4) for k, v in pose_auc(errors).items()}
    result.update(pairs=len(pairs), num_matches=round(float(np.mean(matches)), 1),
                  median_error_deg=round(float(np.median(errors)), 3))
    return result
