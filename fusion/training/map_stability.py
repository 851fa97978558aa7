"""Learn the stability head from a reference map, without a semantic teacher.

SFD2's stability classes stand for what a map keeps (buildings) and what it does not (vegetation,
sky, people, cars). A reference reconstruction says it directly: a keypoint that became a 3D point
seen in three or more images is **stable**, one seen in two is **short-term**, one detected but
never triangulated is **unstable**; 1/8 cells without keypoints are ignored. The backbone is frozen
(official statistics, BatchNorm in eval mode), so its 64-d descriptor maps are computed once per
image (plus photometric variants: dimmer, night-like, other contrast, which the labels do not
change) and only the small head is trained, class-balanced, on the cells. A share of the images is
held out and the per-class accuracy on them is reported and stored in the checkpoint.

    python -m fusion.train --stage stability --reference MODEL --features FEATS.h5 --images DIR [--output CKPT]
"""

import logging
import time
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pycolmap
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..features.extract import prepare_image
from ..features.fused import FusedXFeat, load_checkpoint, save_checkpoint
from ..features.h5 import FeatureReader
from ..features.provenance import fingerprint, input_fingerprint, make_recipe, read_recipe
from ..features.stability import STABILITY_CLASSES
from ..features.xfeat import resize_to_multiple_of_32
from .data.labels import IGNORE, SHORT_TERM, STABLE, UNSTABLE

logger = logging.getLogger("fusion")

default_conf = {
    "val_share": 0.2,  # images held out for validation (at least one when there are two or more)
    # Images the head learns from, a fixed spread-out sample of larger maps: the head is two 1x1
    # convolutions, and the cells' descriptors (about 3 MB per 1024-px image) stay in memory for training.
    "max_images": 400,
    "steps": 400,
    "batch_cells": 8192,
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "variants": ("original", "dim", "night", "contrast"),
    "seed": 0,
}


def keypoint_classes(model: pycolmap.Reconstruction, image: pycolmap.Image, count: int, source: Path) -> np.ndarray:
    """Stability class of each of an image's ``count`` keypoints from its 3D points' track lengths."""
    points2d = image.points2D
    if len(points2d) != count:
        raise ValueError(f"{image.name}: {len(points2d)} keypoints in the model but {count} in {source}; give the "
                         "features the map was built from")
    classes = np.full(count, UNSTABLE, np.int64)
    for index, point in enumerate(points2d):
        if point.has_point3D():
            classes[index] = STABLE if model.points3D[point.point3D_id].track.length() >= 3 else SHORT_TERM
    return classes


def cell_labels(keypoints: np.ndarray, classes: np.ndarray, grid: Tuple[int, int]) -> np.ndarray:
    """(h, w) labels of the 1/8 cells: the most stable class among a cell's keypoints, IGNORE without one.

    ``keypoints`` are in the pixels of the network input (a multiple of 32 on each side).
    """
    height, width = grid
    labels = np.full(grid, IGNORE, np.int64)
    cells = np.floor(keypoints / 8).astype(np.int64)
    inside = (cells[:, 0] >= 0) & (cells[:, 0] < width) & (cells[:, 1] >= 0) & (cells[:, 1] < height)
    np.maximum.at(labels, (cells[inside, 1], cells[inside, 0]), classes[inside])
    return labels


def photometric_variant(image: torch.Tensor, kind: str, rng: np.random.Generator) -> torch.Tensor:
    """The same view under other light: the map's classes do not depend on it, the query's light does."""
    if kind == "original":
        return image
    if kind == "dim":
        return (image * rng.uniform(0.35, 0.6)).clamp(0, 1)
    if kind == "night":
        tint = torch.tensor([1.0, 0.8, 0.55])[:, None, None]
        noise = torch.from_numpy(rng.normal(0, 0.02, image.shape).astype(np.float32))
        return (image.pow(1.4) * 0.25 * tint + noise).clamp(0, 1)
    if kind == "contrast":
        return ((image - 0.5) * rng.uniform(0.6, 1.4) + 0.5 + rng.uniform(-0.1, 0.1)).clamp(0, 1)
    raise ValueError(f"photometric variant {kind!r} is not one of original, dim, night, contrast")


def held_out(name: str, share: float) -> bool:
    return zlib.crc32(name.encode()) % 1000 < share * 1000


def image_sample(model: pycolmap.Reconstruction, reader: FeatureReader, count: int) -> List[pycolmap.Image]:
    """The model's images with features, or ``count`` of them chosen by a hash of the name (spread, fixed)."""
    found = [image for image in model.images.values() if image.name in reader.fd]
    if len(found) > count:
        found = sorted(found, key=lambda image: zlib.crc32(b"sample:" + image.name.encode()))[:count]
    return sorted(found, key=lambda image: image.name)


def image_labels(model: pycolmap.Reconstruction, sample: List[pycolmap.Image], reader: FeatureReader,
                 preprocessing: dict, images: Path):
    """Per image of ``sample``, one at a time: its network input and the labels of its 1/8 cells."""
    for image in sample:
        tensor, original_size = prepare_image(images / image.name, preprocessing)
        resized, _ = resize_to_multiple_of_32(tensor)
        keypoints = reader.keypoints(image.name)
        # the extraction wrote (k + 0.5) * original / input - 0.5; back to the network's pixels
        to_network = np.array(resized.shape[-2:][::-1]) / original_size
        network = (keypoints + 0.5) * to_network - 0.5
        classes = keypoint_classes(model, image, len(keypoints), reader.path)
        grid = (resized.shape[-2] // 8, resized.shape[-1] // 8)
        yield image.name, tensor, cell_labels(network, classes, grid)


@torch.no_grad()
def descriptor_maps(fused: FusedXFeat, tensor: torch.Tensor) -> torch.Tensor:
    """The frozen backbone's 64-d map (64, h, w) that the stability head reads."""
    resized, _ = resize_to_multiple_of_32(tensor)
    return fused.backbone.forward_maps(resized)["dense_descriptors"][0]


def per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> Dict[str, float]:
    predicted = logits.argmax(1)
    return {name: round(float((predicted[labels == k] == k).float().mean()), 4) if (labels == k).any() else None
            for k, name in enumerate(STABILITY_CLASSES)}


def train_head(fused: FusedXFeat, features: torch.Tensor, labels: torch.Tensor, conf: dict) -> List[float]:
    """Class-balanced cross-entropy of the stability head on (N, 64) cell descriptors; returns the losses."""
    counts = torch.bincount(labels, minlength=len(STABILITY_CLASSES)).float()
    weights = torch.where(counts > 0, counts.sum() / (len(STABILITY_CLASSES) * counts.clamp_min(1)), torch.zeros(3))
    head = fused.stability_head.train()
    optimizer = torch.optim.AdamW(head.parameters(), lr=conf["lr"], weight_decay=conf["weight_decay"])
    generator = torch.Generator().manual_seed(conf["seed"])
    losses = []
    for _ in tqdm(range(conf["steps"]), desc="stability head", unit="step"):
        pick = torch.randint(len(labels), (min(conf["batch_cells"], len(labels)),), generator=generator)
        logits = head(features[pick][:, :, None, None])[:, :, 0, 0]
        loss = F.cross_entropy(logits, labels[pick], weight=weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    head.eval()
    return losses


def cells(maps: torch.Tensor, labels: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
    """(N, 64) descriptors and (N,) labels of an image's labelled cells."""
    labels = torch.from_numpy(labels)
    keep = labels != IGNORE
    return maps.permute(1, 2, 0)[keep], labels[keep]


def default_output(reference: Path, features: Path, conf: dict, base_checkpoint: Optional[Path]) -> Path:
    """outputs/fused_xfeat-stability-<fingerprint>.pt, named after everything that makes the checkpoint."""
    recipe = make_recipe("stability", conf, [base_checkpoint] if base_checkpoint else [],
                         inputs={"reference": input_fingerprint(reference), "features": input_fingerprint(features)})
    return Path("outputs") / f"fused_xfeat-stability-{fingerprint(recipe)[:8]}.pt"


def main(reference: Path, features: Path, images: Path, output: Optional[Path] = None,
         base_checkpoint: Optional[Path] = None, conf: Optional[dict] = None) -> Path:
    """Train the stability head of a fused model from a reference map; writes and returns the checkpoint."""
    conf = {**default_conf, **(conf or {})}
    reference, features, images = Path(reference), Path(features), Path(images)
    if not (reference / "points3D.bin").exists() and not (reference / "points3D.txt").exists():
        raise FileNotFoundError(f"{reference}: not a COLMAP model with 3D points (the map the labels come from)")
    if not images.is_dir():
        raise FileNotFoundError(f"{images}: image folder not found")
    output = Path(output) if output else default_output(reference, features, conf, base_checkpoint)
    start = time.perf_counter()
    model = pycolmap.Reconstruction(reference)
    if model.num_points3D() == 0:
        raise ValueError(f"{reference}: the model has no 3D points: there are no tracks to learn stability from")
    recipe = read_recipe(features) or {}
    preprocessing = recipe.get("conf", {}).get("preprocessing", {"resize_max": 1024})
    with torch.random.fork_rng():  # the head's initial weights: the same checkpoint from the same inputs
        torch.manual_seed(conf["seed"])
        fused = load_checkpoint(base_checkpoint) if base_checkpoint else FusedXFeat()
    fused.eval()
    fused.requires_grad_(False)
    fused.stability_head.requires_grad_(True)
    reader = FeatureReader(features)
    try:
        sample = image_sample(model, reader, conf["max_images"])
        if not sample:
            raise ValueError(f"{reference}: no image of the model has features in {features}")
        val_names = {image.name for image in sample if held_out(image.name, conf["val_share"])}
        if not val_names and len(sample) > 1:
            val_names = {sample[-1].name}  # no image fell on the held-out side: hold one out anyway
        rng = np.random.default_rng(conf["seed"])
        train, val, counts = [], [], np.zeros(3, np.int64)
        for name, tensor, labels in tqdm(image_labels(model, sample, reader, preprocessing, images),
                                         desc="map labels", unit="img", total=len(sample)):
            counts += np.bincount(labels[labels != IGNORE], minlength=3)
            variants = ("original",) if name in val_names else conf["variants"]
            for kind in variants:
                maps = descriptor_maps(fused, photometric_variant(tensor[0], kind, rng)[None])
                (val if name in val_names else train).append(cells(maps, labels))
    finally:
        reader.close()
    losses = train_head(fused, torch.cat([c for c, _ in train]), torch.cat([label for _, label in train]), conf)
    validation = {}
    if val:
        with torch.no_grad():
            descriptors, labels = torch.cat([c for c, _ in val]), torch.cat([label for _, label in val])
            validation = per_class_accuracy(fused.stability_head(descriptors[:, :, None, None])[:, :, 0, 0], labels)
    fused.stability_trained.fill_(True)
    summary = {"stage": "stability", "reference": input_fingerprint(reference), "features": input_fingerprint(features),
               "cells_per_class": dict(zip(STABILITY_CLASSES, counts.tolist())),
               "train_images": len(sample) - len(val_names), "val_images": sorted(val_names), "val_accuracy": validation,
               "final_loss": round(float(np.mean(losses[-20:])), 4), "seconds": round(time.perf_counter() - start, 1),
               "conf": {k: list(v) if isinstance(v, tuple) else v for k, v in conf.items()}}
    save_checkpoint(fused, output, {"training": summary})
    logger.info(f"Stability: cells {summary['cells_per_class']}, held-out accuracy {validation}, "
                f"{summary['seconds']} s; checkpoint {output}")
    return output
