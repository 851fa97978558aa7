"""Synthetic pairs from any image folder (COCO-style): a random homography and a photometric change."""

from pathlib import Path

import cv2
import numpy as np
import torch

from ...store.io import IMAGE_SUFFIXES
from .geometry import cell_centres, cell_corners, inside, warp_homography
from .labels import ade20k_lookup, cell_labels, label_path, read_stability_labels
from .photometric import LIGHT_CHANGE, seeded


class SyntheticPairs:
    default_conf = {
        "root": None, "size": [256, 256], "max_perspective": 0.15, "max_rotation_deg": 25,
        "scale_range": [0.75, 1.25], "photometric": True, "labels": False, "length": 10000,
    }

    def __init__(self, conf: dict, seed: int = 0):
        self.conf = conf = {**self.default_conf, **(conf or {})}
        if not conf["root"]:
            raise ValueError("data.synthetic.root: give an image folder")
        root = Path(conf["root"])
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: synthetic training image folder not found")
        self.paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                            and not p.stem.endswith("_seg"))
        if not self.paths:
            raise FileNotFoundError(f"{root}: no training images")
        for path in self.paths:  # fail before training, naming the file
            if cv2.imread(str(path), cv2.IMREAD_REDUCED_COLOR_8) is None:
                raise ValueError(f"{path}: cannot decode training image")
        self.table = ade20k_lookup() if conf["labels"] else None
        if self.table is not None:
            missing = [p for p in self.paths if not label_path(p).exists()]
            if missing:
                raise FileNotFoundError(f"{label_path(missing[0])}: label map missing ({len(missing)} images lack one)")
        self.seed = seed

    def __len__(self):
        return self.conf["length"]

    def random_homography(self, rng, width, height):
        corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
        jitter = rng.uniform(-1, 1, (4, 2)) * self.conf["max_perspective"] * np.array([width, height])
        angle = rng.uniform(-1, 1) * self.conf["max_rotation_deg"]
        scale = rng.uniform(*self.conf["scale_range"])
        centre = np.array([width / 2, height / 2])
        rotation = cv2.getRotationMatrix2D(tuple(centre), angle, scale)
        moved = (corners + jitter) @ rotation[:, :2].T + rotation[:, 2]
        return cv2.getPerspectiveTransform(corners, moved.astype(np.float32)).astype(np.float64)

    def photometric(self, rng, image: np.ndarray) -> np.ndarray:
        """An 8-bit RGB image (H, W, 3) as float32 (3, H, W) in [0, 1], under other light (``LIGHT_CHANGE``)
        if configured."""
        image = torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)
        if self.conf["photometric"]:
            image = seeded(LIGHT_CHANGE, image, rng)
        return image.contiguous().numpy()

    def sample(self, rng) -> dict:
        width, height = self.conf["size"]
        path = self.paths[rng.integers(len(self.paths))]
        image = cv2.imread(str(path))[:, :, ::-1]
        scale = max(width / image.shape[1], height / image.shape[0]) * rng.uniform(1.0, 1.5)
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        x0 = rng.integers(0, image.shape[1] - width + 1)
        y0 = rng.integers(0, image.shape[0] - height + 1)
        crop = np.ascontiguousarray(image[y0:y0 + height, x0:x0 + width])
        homography = self.random_homography(rng, width, height)
        warped = cv2.warpPerspective(crop, homography, (width, height), borderMode=cv2.BORDER_CONSTANT)
        centres = cell_centres(height, width)
        warp01 = warp_homography(centres, homography)
        warp10 = warp_homography(centres, np.linalg.inv(homography))
        corners10 = warp_homography(cell_corners(height, width), np.linalg.inv(homography))
        sample = {
            "image0": self.photometric(rng, crop),
            "image1": self.photometric(rng, warped),
            "warp01": warp01, "valid01": inside(warp01, height, width, 4),
            "warp10": warp10, "valid10": inside(warp10, height, width, 4),
            "corners10": corners10, "corners10_valid": inside(corners10, height, width),
            "homography": homography.astype(np.float32),
        }
        if self.table is not None:
            labels = read_stability_labels(label_path(path), self.table)
            labels = cv2.resize(labels.astype(np.float32), (image.shape[1], image.shape[0]),
                                interpolation=cv2.INTER_NEAREST).astype(np.int64)[y0:y0 + height, x0:x0 + width]
            warped_labels = cv2.warpPerspective(labels.astype(np.float32), homography, (width, height),
                                                flags=cv2.INTER_NEAREST, borderValue=-1).astype(np.int64)
            sample["labels0"], sample["labels1"] = cell_labels(labels), cell_labels(warped_labels)
        return sample
