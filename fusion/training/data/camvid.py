"""CamVid street frames with per-pixel labels, mapped onto SFD2's three stability classes.

Layout (as prepared for SegNet): ``ROOT/<split>/*.jpg`` and ``ROOT/<split>annot/*.png`` (one class id per
pixel). CamVid is licensed for non-commercial research (CC BY-NC 4.0); a model trained on it inherits that.
"""

from pathlib import Path
from typing import List, Tuple

import cv2
import numpy as np

from .labels import IGNORE, SHORT_TERM, STABLE, UNSTABLE, cell_labels

CAMVID_LICENCE = "CC BY-NC 4.0 (trained on CamVid: non-commercial research use only)"
CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                  "Pedestrian", "Bicyclist", "Unlabelled")
STABILITY_OF = {
    UNSTABLE: ("Sky", "Tree", "Pedestrian", "Bicyclist"),
    SHORT_TERM: ("Car",),
    STABLE: ("Building", "Pole", "Road", "Pavement", "SignSymbol", "Fence"),
}


def camvid_lookup() -> np.ndarray:
    """Table from CamVid class id (0..255) to stability class, IGNORE for Unlabelled and unknown ids."""
    table = np.full(256, IGNORE, np.int64)
    for stability, names in STABILITY_OF.items():
        table[[CAMVID_CLASSES.index(name) for name in names]] = stability
    return table


def split_files(root: Path, split: str) -> List[Tuple[Path, Path]]:
    """(frame, label map) paths of one split; a clear error naming what is missing."""
    frames, annotations = Path(root) / split, Path(root) / f"{split}annot"
    if not frames.is_dir():
        raise FileNotFoundError(f"{frames}: no such split folder (CamVid layout: ROOT/{split}/*.jpg and "
                                f"ROOT/{split}annot/*.png)")
    pairs = [(frame, annotations / f"{frame.stem}.png") for frame in sorted(frames.glob("*.jpg"))
             + sorted(frames.glob("*.png"))]
    if not pairs:
        raise FileNotFoundError(f"{frames}: no .jpg or .png frames")
    missing = [str(label) for _, label in pairs if not label.is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: label map missing ({len(missing)} of {len(pairs)} frames have none)")
    return pairs


def stability_cells(label_path: Path, size: Tuple[int, int], cell: int = 8) -> np.ndarray:
    """(h, w) stability class of each ``cell`` x ``cell`` block (the head's 1/8 cells) of a network input of
    ``size`` (H, W): the majority of its labelled pixels after a nearest-neighbour resize to that input;
    IGNORE where no pixel is labelled."""
    labels = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
    if labels is None or labels.ndim != 2:
        raise ValueError(f"{label_path}: not a single-channel CamVid label map")
    height, width = size
    labels = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
    return cell_labels(camvid_lookup()[labels.astype(np.int64)], cell, labelled_majority=True)
