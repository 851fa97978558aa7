"""Semantic labels: ADE20K label maps (SceneParsing, 150 classes) mapped to SFD2's stability classes."""

from pathlib import Path
from typing import Dict, Optional

import cv2
import numpy as np

UNSTABLE, SHORT_TERM, STABLE, IGNORE = 0, 1, 2, -1

# ADE20K SceneParsing class indices (objectInfo150, 1-based; 0 = other).
ADE20K_CLASSES = {
    "wall": 1, "building": 2, "sky": 3, "floor": 4, "tree": 5, "ceiling": 6, "road": 7, "windowpane": 9,
    "grass": 10, "sidewalk": 12, "person": 13, "earth": 14, "door": 15, "mountain": 17, "plant": 18,
    "car": 21, "water": 22, "house": 26, "sea": 27, "field": 30, "fence": 33, "rock": 35, "railing": 39,
    "column": 43, "signboard": 44, "skyscraper": 49, "path": 53, "stairs": 54, "river": 61, "bridge": 62,
    "flower": 67, "palm": 73, "boat": 77, "bus": 81, "truck": 84, "tower": 85, "streetlight": 88,
    "airplane": 91, "van": 103, "ship": 104,
}
STABILITY_OF = {
    STABLE: ("wall", "building", "floor", "ceiling", "road", "windowpane", "sidewalk", "door", "house", "fence",
             "rock", "railing", "column", "signboard", "skyscraper", "path", "stairs", "bridge", "tower",
             "streetlight", "mountain"),
    SHORT_TERM: ("tree", "grass", "plant", "flower", "palm", "field", "earth"),
    UNSTABLE: ("sky", "water", "sea", "river", "person", "car", "bus", "truck", "boat", "airplane", "van", "ship"),
}


def ade20k_lookup(overrides: Optional[Dict[str, str]] = None) -> np.ndarray:
    """Table from ADE20K index (0..150) to stability class (-1 where unmapped)."""
    table = np.full(256, IGNORE, np.int64)
    for stability, names in STABILITY_OF.items():
        for name in names:
            table[ADE20K_CLASSES[name]] = stability
    for name, stability in (overrides or {}).items():
        table[ADE20K_CLASSES[name]] = {"unstable": UNSTABLE, "short_term": SHORT_TERM, "stable": STABLE}[stability]
    return table


def label_path(image_path: Path, suffix: str = "_seg.png") -> Path:
    """Where the label map of an image is stored: beside it, ``<stem>_seg.png``."""
    return image_path.with_name(image_path.stem + suffix)


def read_stability_labels(path: Path, table: np.ndarray) -> np.ndarray:
    """Stability classes (H, W) of an ADE20K label map; a clear error when the file is bad."""
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise ValueError(f"{path}: cannot read label map")
    if labels.ndim != 2:
        raise ValueError(f"{path}: label map must be single-channel ADE20K class indices, got shape {labels.shape}")
    return table[labels.astype(np.int64).clip(0, 255)]


def cell_labels(labels: np.ndarray, cell: int = 8, labelled_majority: bool = False) -> np.ndarray:
    """Majority class of each cell x cell block; -1 (ignore) is a class of its own that can win, or, with
    ``labelled_majority``, the majority of the labelled pixels (-1 only for a block without any)."""
    height, width = labels.shape[0] // cell, labels.shape[1] // cell
    blocks = labels[: height * cell, : width * cell].reshape(height, cell, width, cell).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(height, width, -1) + 1  # -1..2 -> 0..3
    counts = np.stack([(blocks == k).sum(-1) for k in range(4)], -1)
    if not labelled_majority:
        return counts.argmax(-1) - 1
    return np.where(counts[..., 1:].sum(-1) > 0, counts[..., 1:].argmax(-1), IGNORE)
