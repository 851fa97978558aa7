"""Learn the stability head from a reference map, without a semantic teacher.

SFD2's stability classes stand for what a map keeps (buildings) and what it does not (vegetation,
sky, people, cars). A reference reconstruction says it directly: a keypoint that became a 3D point
seen in three or more images is **stable**, one seen in two is **short-term**, one detected but
never triangulated is **unstable**; 1/8 cells without keypoints are ignored. The head is trained alone
on the frozen backbone's maps (``fusion.training.stability_head``; photometric variants, from
``fusion.training.data.photometric``: dimmer, night-like, other contrast, which the labels do not
change). Validation holds out a share of the 3D points (and of the untriangulated keypoints), in every
image that sees them: labels belong to points, so no point is in both sets. On the held-out cells it
reports the per-class accuracy and the AUC of the head and of XFeat's own heatmap x reliability as
predictors of "was triangulated" (the free baseline a learned head has to beat).

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
from ..features.stability import STABILITY_CLASSES
from ..features.xfeat import keypoint_heatmap, resize_to_multiple_of_32
from ..store.h5 import FeatureReader
from ..store.provenance import fingerprint, input_fingerprint, make_recipe, read_recipe
from . import stability_head
from .data.labels import IGNORE, SHORT_TERM, STABLE, UNSTABLE
from .data.photometric import photometric_variant
from .stability_head import Sample, best_epoch, head_inputs, train_head

logger = logging.getLogger("fusion")

default_conf = {
    **stability_head.default_conf,
    "epochs": 20,
    "batch_images": 4,
    "val_share": 0.2,  # of the 3D points (and untriangulated keypoints), held out for validation
    # Images the head learns from, a fixed spread-out sample of larger maps (their maps, about 2 MB
    # per 1024-px image and variant in float16, stay in memory for training).
    "max_images": 400,
    "variants": ("original", "dim", "night", "contrast"),
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


def held_out_keypoints(model: pycolmap.Reconstruction, image: pycolmap.Image, share: float) -> np.ndarray:
    """Which keypoints of an image are validation's: those of held-out 3D points (chosen by point, so
    in every image that sees them) and a share of the untriangulated ones (chosen by image and index)."""
    keys = [f"point{p.point3D_id}" if p.has_point3D() else f"{image.name}:{i}" for i, p in enumerate(image.points2D)]
    return np.array([zlib.crc32(key.encode()) % 1000 < share * 1000 for key in keys], bool)


def image_sample(model: pycolmap.Reconstruction, reader: FeatureReader, count: int) -> List[pycolmap.Image]:
    """The model's images with features, or ``count`` of them chosen by a hash of the name (spread, fixed)."""
    found = [image for image in model.images.values() if image.name in reader.fd]
    if len(found) > count:
        found = sorted(found, key=lambda image: zlib.crc32(b"sample:" + image.name.encode()))[:count]
    return sorted(found, key=lambda image: image.name)


def image_labels(model: pycolmap.Reconstruction, sample: List[pycolmap.Image], reader: FeatureReader,
                 preprocessing: dict, images: Path, val_share: float):
    """Per image of ``sample``, one at a time: its network input, the labels of its 1/8 cells from the
    training keypoints and from the held-out ones (a cell with both is validation's only)."""
    for image in sample:
        tensor, original_size = prepare_image(images / image.name, preprocessing)
        resized, _ = resize_to_multiple_of_32(tensor)
        keypoints = reader.keypoints(image.name)
        # the extraction wrote (k + 0.5) * original / input - 0.5; back to the network's pixels
        to_network = np.array(resized.shape[-2:][::-1]) / original_size
        network = (keypoints + 0.5) * to_network - 0.5
        classes = keypoint_classes(model, image, len(keypoints), reader.path)
        grid = (resized.shape[-2] // 8, resized.shape[-1] // 8)
        val = held_out_keypoints(model, image, val_share)
        val_labels = cell_labels(network[val], classes[val], grid)
        train_labels = np.where(val_labels == IGNORE, cell_labels(network[~val], classes[~val], grid), IGNORE)
        yield image.name, tensor, train_labels, val_labels


def auc(scores: np.ndarray, positive: np.ndarray) -> Optional[float]:
    """Area under the ROC curve of ``scores`` for the ``positive`` class (ties count half); None if one class is absent."""
    count_pos, count_neg = int(positive.sum()), int((~positive).sum())
    if not count_pos or not count_neg:
        return None
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)  # 1-based average ranks
    return round(float((ranks[positive].sum() - count_pos * (count_pos + 1) / 2) / (count_pos * count_neg)), 4)


@torch.no_grad()
def triangulation_auc(fused: FusedXFeat, val: List[Sample], detector_scores: List[torch.Tensor]) -> Dict[str, float]:
    """AUC of the head's P(not unstable) and of XFeat's cell score (heatmap peak x reliability) as
    predictors of "its keypoint was triangulated", over the held-out cells."""
    head, xfeat, triangulated = [], [], []
    for (inputs, labels), detector in zip(val, detector_scores):
        keep = labels != IGNORE
        probability = fused.stability_head({k: v[None].float() for k, v in inputs.items()})[0].softmax(0)
        head.append((1 - probability[UNSTABLE])[keep])
        xfeat.append(detector[keep])
        triangulated.append(labels[keep] != UNSTABLE)
    positive = torch.cat(triangulated).numpy()
    return {"head": auc(torch.cat(head).numpy(), positive), "xfeat_score": auc(torch.cat(xfeat).numpy(), positive)}


@torch.no_grad()
def detector_cell_scores(fused: FusedXFeat, tensor: torch.Tensor) -> torch.Tensor:
    """XFeat's own score of each 1/8 cell: its keypoint heatmap peak x reliability (h, w)."""
    maps = fused.backbone.forward_maps(resize_to_multiple_of_32(tensor)[0])
    return (F.max_pool2d(keypoint_heatmap(maps["keypoint_logits"]), 8) * maps["reliability"])[0, 0]


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
        rng = np.random.default_rng(conf["seed"])
        train, val, detector, counts = [], [], [], np.zeros(3, np.int64)
        for name, tensor, train_labels, val_labels in tqdm(
                image_labels(model, sample, reader, preprocessing, images, conf["val_share"]),
                desc="map labels", unit="img", total=len(sample)):
            for labels in (train_labels, val_labels):
                counts += np.bincount(labels[labels != IGNORE], minlength=3)
            for kind in conf["variants"]:
                train.append((head_inputs(fused.backbone, photometric_variant(tensor[0], kind, rng)[None]),
                              torch.from_numpy(train_labels)))
            if (val_labels != IGNORE).any():
                val.append((head_inputs(fused.backbone, tensor), torch.from_numpy(val_labels)))
                detector.append(detector_cell_scores(fused, tensor))
    finally:
        reader.close()
    history = train_head(fused.stability_head, train, val, conf)
    validation = best_epoch(history)["val"] if val else {}
    triangulated_auc = triangulation_auc(fused, val, detector) if val else {}
    fused.stability_trained.fill_(True)
    summary = {"stage": "stability", "reference": input_fingerprint(reference), "features": input_fingerprint(features),
               "cells_per_class": dict(zip(STABILITY_CLASSES, counts.tolist())), "images": len(sample),
               "val_share_of_points": conf["val_share"], "val": validation, "triangulated_auc": triangulated_auc,
               "final_loss": history[-1]["loss"], "seconds": round(time.perf_counter() - start, 1),
               "conf": {k: list(v) if isinstance(v, tuple) else v for k, v in conf.items()}}
    save_checkpoint(fused, output, {"training": summary}, head_only=base_checkpoint is None)
    logger.info(f"Stability: cells {summary['cells_per_class']}, held-out points: class accuracy "
                f"{validation.get('class_accuracy')}, AUC of 'triangulated' head {triangulated_auc.get('head')} vs "
                f"XFeat's score {triangulated_auc.get('xfeat_score')}; {summary['seconds']} s; checkpoint {output}")
    return output
