"""WxBS benchmark (Mishkin et al., BMVC 2015): cross-condition pairs judged by the fundamental matrix.

Layout: ``ROOT/<category>/<pair>/{01.jpg, 02.jpg, corrs.txt}``, ``corrs.txt`` holding hand-labelled
correspondences ``x1 y1 x2 y2`` in the pixels of 01 and 02. Each pair is extracted and matched, F is
estimated from the matches with MAGSAC++ in the original pixels, and every GT correspondence is
scored by its symmetric epipolar distance under that F. PCK@t is the share within t px (0 when
there are fewer than 8 matches or no F); mAA is the mean PCK over t = 1..20 px.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import cv2
import numpy as np
from tqdm import tqdm

THRESHOLDS = tuple(range(1, 21))
REPORTED = (5, 10, 20)
THERMAL = "WGSBS"  # visible vs thermal: left out of "all_but_thermal"
MIN_MATCHES = 8


@dataclass
class Pair:
    category: str
    name: str
    images: tuple  # (01.jpg, 02.jpg)
    correspondences: np.ndarray  # (N, 4): x1 y1 x2 y2

    @property
    def key(self) -> str:
        return f"{self.category}/{self.name}"


def read_pair(folder: Path, category: str) -> Pair:
    images = tuple(folder / name for name in ("01.jpg", "02.jpg"))
    missing = [p.name for p in (*images, folder / "corrs.txt") if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: missing {', '.join(missing)} (WxBS layout: 01.jpg, 02.jpg, corrs.txt)")
    try:
        correspondences = np.loadtxt(folder / "corrs.txt", ndmin=2)
    except ValueError as error:
        raise ValueError(f"{folder / 'corrs.txt'}: not 'x1 y1 x2 y2' lines ({error})") from error
    if correspondences.shape[1] != 4 or len(correspondences) == 0:
        raise ValueError(f"{folder / 'corrs.txt'}: expected lines 'x1 y1 x2 y2', got shape {correspondences.shape}")
    return Pair(category, folder.name, images, correspondences)


def read_pairs(root: Path) -> List[Pair]:
    """Every pair under ``root/<category>/<pair>/``, sorted by category and name."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: WxBS folder not found (expected <category>/<pair>/01.jpg, 02.jpg, corrs.txt)")
    pairs = [read_pair(folder, category.name)
             for category in sorted(p for p in root.iterdir() if p.is_dir())
             for folder in sorted(p for p in category.iterdir() if p.is_dir())]
    if not pairs:
        raise FileNotFoundError(f"{root}: no WxBS pairs (expected <category>/<pair>/01.jpg, 02.jpg, corrs.txt)")
    return pairs


def symmetric_epipolar_distance(fundamental: np.ndarray, points0: np.ndarray, points1: np.ndarray) -> np.ndarray:
    """Square root of Hartley & Zisserman's symmetric epipolar distance (11.10), in pixels, per point pair."""
    x0 = np.hstack([points0, np.ones((len(points0), 1))])
    x1 = np.hstack([points1, np.ones((len(points1), 1))])
    lines1 = x0 @ fundamental.T  # F x0: epipolar lines in image 1
    lines0 = x1 @ fundamental  # F^T x1: epipolar lines in image 0
    algebraic = np.sum(x1 * lines1, axis=1) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        squared = algebraic * (1 / (lines1[:, 0] ** 2 + lines1[:, 1] ** 2) + 1 / (lines0[:, 0] ** 2 + lines0[:, 1] ** 2))
    return np.sqrt(np.nan_to_num(squared, nan=np.inf))


def estimate_fundamental(points0: np.ndarray, points1: np.ndarray) -> Optional[np.ndarray]:
    """F from matched points with MAGSAC++ (1 px, confidence 0.9999, 10,000 iterations); None when it fails."""
    if len(points0) < MIN_MATCHES:
        return None
    try:
        fundamental, _ = cv2.findFundamentalMat(points0.astype(np.float64), points1.astype(np.float64),
                                                cv2.USAC_MAGSAC, 1.0, 0.9999, 10000)
    except cv2.error:  # OpenCV's USAC asserts on some degenerate sets instead of returning no model
        return None
    if fundamental is None or fundamental.shape[0] < 3:
        return None
    return fundamental[:3]


def pck(fundamental: Optional[np.ndarray], correspondences: np.ndarray, thresholds=THRESHOLDS) -> np.ndarray:
    """Share of GT correspondences within each threshold (px) of their epipolar lines; zeros without F."""
    if fundamental is None:
        return np.zeros(len(thresholds))
    errors = symmetric_epipolar_distance(fundamental, correspondences[:, :2], correspondences[:, 2:])
    return np.array([(errors <= t).mean() for t in thresholds])


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: cannot read image")
    return image[:, :, ::-1]


def evaluate_pair(pair: Pair, extractor: Callable, matcher: Callable) -> Dict:
    features = [extractor(read_rgb(path)) for path in pair.images]
    index0, index1 = matcher(*features)
    points0, points1 = features[0]["keypoints"][index0], features[1]["keypoints"][index1]
    curve = pck(estimate_fundamental(points0, points1), pair.correspondences)
    return {"category": pair.category, "pck": curve, "matches": len(index0),
            "features": np.mean([len(f["keypoints"]) for f in features])}


def evaluate(pairs: List[Pair], extractor: Callable, matcher: Callable) -> Dict:
    """PCK@5/10/20 and mAA over all pairs, per category and all but thermal; each pair's mAA and matches."""
    per_pair = {pair.key: evaluate_pair(pair, extractor, matcher) for pair in tqdm(pairs, desc="wxbs", unit="pair")}
    return summarize(per_pair)


def summarize(per_pair: Dict[str, Dict]) -> Dict:
    def block(results: List[Dict]) -> Dict:
        curve = np.mean([r["pck"] for r in results], axis=0)
        out = {"pairs": len(results), "maa": round(float(curve.mean()), 4)}
        out.update({f"pck@{t}": round(float(curve[THRESHOLDS.index(t)]), 4) for t in REPORTED})
        out["num_matches"] = round(float(np.mean([r["matches"] for r in results])), 1)
        return out

    results = list(per_pair.values())
    summary = block(results)
    for category in sorted({r["category"] for r in results}):
        summary[category] = block([r for r in results if r["category"] == category])
    others = [r for r in results if r["category"] != THERMAL]
    if others:
        summary["all_but_thermal"] = block(others)
    summary["per_pair"] = {key: {"maa": round(float(r["pck"].mean()), 4), "matches": r["matches"]}
                           for key, r in per_pair.items()}
    return summary
