"""Learn the stability head from CamVid's semantic labels (SFD2's stability: what changes over time).

Sky, trees, pedestrians and bicyclists are unstable, cars short-term, buildings, poles, road, pavement,
signs and fences stable (``fusion.training.data.camvid``); each 1/8 cell takes the majority of its
labelled pixels. The head is trained on CamVid train (plus night-like copies, and mirrored batches: both
keep the labels) and the epoch best on CamVid val is kept. The result inherits CamVid's licence, CC BY-NC 4.0.

    python -m fusion.train --stage camvid --data DIR [--output CKPT] [--pretrained CKPT] [key=value ...]
"""

import logging
import time
from pathlib import Path
from typing import Iterable, List, Optional

import numpy as np
import torch
from tqdm import tqdm

from ..features.extract import prepare_image
from ..features.fused import FusedXFeat, load_checkpoint, save_checkpoint
from ..features.stability import StabilityHead
from ..features.xfeat import XFeatBackbone, resize_to_multiple_of_32
from ..store.provenance import fingerprint, input_fingerprint, make_recipe
from . import stability_head
from .data.camvid import CAMVID_LICENCE, split_files, stability_cells
from .data.photometric import photometric_variant
from .stability_head import Sample, head_inputs, train_head

logger = logging.getLogger("fusion")

default_conf = {
    **stability_head.default_conf,
    # sqrt balancing: full balancing (1.0) over-predicts the rare cars (1.8% of val cells) at the cost of
    # stable cells (benchmarks/stability_heads.py: pixel accuracy 0.857 -> 0.891, car IoU 0.18 -> 0.25)
    "class_balance": 0.5,
    "train_split": "train",
    "val_split": "val",
    "variants": ("original", "night"),  # of each training frame (mirrored on the fly); validation: the originals
    "head": StabilityHead.default_conf,
}


def frame_samples(backbone: XFeatBackbone, data: Path, split: str, variants: Iterable[str],
                  rng: np.random.Generator) -> List[Sample]:
    """The head's inputs and the cell labels of every frame of a split, in each variant."""
    samples = []
    for frame, label_path in tqdm(split_files(data, split), desc=f"camvid {split}", unit="frame"):
        image, _ = prepare_image(frame, {"grayscale": False})
        labels = torch.from_numpy(stability_cells(label_path, resize_to_multiple_of_32(image)[0].shape[-2:]))
        for kind in variants:
            samples.append((head_inputs(backbone, photometric_variant(image[0], kind, rng)[None]), labels))
    return samples


def default_output(data: Path, conf: dict, base_checkpoint: Optional[Path]) -> Path:
    """outputs/fused_xfeat-camvid-<fingerprint>.pt, named after everything that makes the checkpoint."""
    recipe = make_recipe("camvid-stability", conf, [base_checkpoint] if base_checkpoint else [],
                         inputs={split: input_fingerprint(Path(data) / split)
                                 for split in (conf["train_split"], conf["val_split"])})
    return Path("outputs") / f"fused_xfeat-camvid-{fingerprint(recipe)[:8]}.pt"


def main(data: Path, output: Optional[Path] = None, base_checkpoint: Optional[Path] = None,
         conf: Optional[dict] = None) -> Path:
    """Train the stability head of a fused model on CamVid; writes and returns the checkpoint."""
    conf = {**default_conf, **(conf or {})}
    data = Path(data)
    start = time.perf_counter()
    with torch.random.fork_rng():  # the head's initial weights: the same checkpoint from the same inputs
        torch.manual_seed(conf["seed"])
        if base_checkpoint:
            fused = load_checkpoint(base_checkpoint)
            fused.stability_head = StabilityHead(conf["head"])
            fused.conf = {**fused.conf, "stability_head": conf["head"]}
        else:
            fused = FusedXFeat({"stability_head": conf["head"]})
    output = Path(output) if output else default_output(data, conf, base_checkpoint)
    rng = np.random.default_rng(conf["seed"])
    train = frame_samples(fused.backbone, data, conf["train_split"], conf["variants"], rng)
    val = frame_samples(fused.backbone, data, conf["val_split"], ("original",), rng)
    fused.requires_grad_(False)
    fused.stability_head.requires_grad_(True)
    history = train_head(fused.stability_head, train, val, conf)
    best = stability_head.best_epoch(history)
    fused.stability_trained.fill_(True)
    summary = {"stage": "camvid", "data": str(data), "licence": CAMVID_LICENCE, "best_epoch": best["epoch"],
               "val": best["val"], "history": history, "seconds": round(time.perf_counter() - start, 1),
               "conf": {k: list(v) if isinstance(v, tuple) else v for k, v in conf.items()}}
    save_checkpoint(fused, output, {"training": summary, "licence": CAMVID_LICENCE}, head_only=not base_checkpoint)
    logger.info(f"CamVid stability head, best on {conf['val_split']} at epoch {best['epoch']}: "
                f"mean class accuracy {best['val']['mean_class_accuracy']}, pixel accuracy "
                f"{best['val']['pixel_accuracy']}, IoU {best['val']['iou']}; {summary['seconds']} s; {output}")
    return output
