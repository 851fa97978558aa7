"""Training and scoring of the stability head alone, on the frozen backbone's maps.

Both ways of labelling stability use it: CamVid's semantic classes (``camvid_stability``) and a reference
map's tracks (``map_stability``). The backbone is frozen with its official statistics (BatchNorm in eval
mode), so its maps are computed once per image and only the small head is trained, on whole maps (its
k x k convolutions see the neighbouring cells), with class-balanced cross-entropy over the labelled cells.
"""

import copy
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..features.stability import CONTEXT_MAPS, STABILITY_CLASSES, StabilityHead
from ..features.xfeat import XFeatBackbone, resize_to_multiple_of_32
from .data.labels import IGNORE

HEAD_INPUTS = ("dense_descriptors", "colour_1_8", *CONTEXT_MAPS)
Sample = Tuple[Dict[str, torch.Tensor], torch.Tensor]  # the head's input maps (C, h, w) and labels (h, w)

default_conf = {
    "epochs": 30,
    "batch_images": 16,
    "lr": 2e-3,
    "weight_decay": 1e-4,
    # Cross-entropy weight of a class: (share of cells) ** -class_balance; 1 balances fully, 0 not at all.
    "class_balance": 1.0,
    "flip": True,  # mirror half of the training batches (maps and labels): stability has no left and right
    "seed": 0,
}


@torch.no_grad()
def head_inputs(backbone: XFeatBackbone, image: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The frozen backbone's maps that the stability head reads, for one image (1, 3, H, W), in float16."""
    resized, _ = resize_to_multiple_of_32(image)
    maps = backbone.forward_maps(resized)
    return {name: maps[name][0].half() for name in HEAD_INPUTS}


def confusion(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """3 x 3 counts (true class, predicted class) over the labelled cells."""
    keep = labels != IGNORE
    index = labels[keep] * len(STABILITY_CLASSES) + logits.argmax(1)[keep]
    return torch.bincount(index, minlength=len(STABILITY_CLASSES) ** 2).reshape(3, 3)


def stability_scores(counts: torch.Tensor) -> dict:
    """Per-class accuracy (recall), their mean over the classes present, pixel accuracy and per-class IoU."""
    counts = counts.double()
    true, predicted, hits = counts.sum(1), counts.sum(0), counts.diag()
    present = true > 0
    recall = hits / true.clamp_min(1)
    iou = hits / (true + predicted - hits).clamp_min(1)
    return {
        "mean_class_accuracy": round(float(recall[present].mean()), 4),
        "pixel_accuracy": round(float(hits.sum() / counts.sum().clamp_min(1)), 4),
        "iou": [round(float(v), 4) for v in iou],
        "class_accuracy": {name: round(float(recall[k]), 4) if present[k] else None
                           for k, name in enumerate(STABILITY_CLASSES)},
        "cells": [int(v) for v in true],
    }


def batches(samples: List[Sample], size: int, generator: Optional[torch.Generator] = None):
    """Stacked batches of samples of one map size (shuffled when a generator is given)."""
    by_shape: Dict[tuple, List[int]] = {}
    for index, (_, labels) in enumerate(samples):
        by_shape.setdefault(tuple(labels.shape), []).append(index)
    groups = []
    for indices in by_shape.values():
        if generator is not None:
            indices = [indices[i] for i in torch.randperm(len(indices), generator=generator).tolist()]
        groups += [indices[i:i + size] for i in range(0, len(indices), size)]
    if generator is not None:
        groups = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
    for group in groups:
        inputs = {name: torch.stack([samples[i][0][name] for i in group]).float() for name in samples[group[0]][0]}
        yield inputs, torch.stack([samples[i][1] for i in group])


@torch.no_grad()
def evaluate_head(head: StabilityHead, samples: List[Sample], batch_size: int = 16) -> dict:
    head.eval()
    counts = sum(confusion(head(inputs), labels) for inputs, labels in batches(samples, batch_size))
    return stability_scores(counts)


def class_weights(samples: List[Sample], exponent: float) -> torch.Tensor:
    counts = sum(torch.bincount(labels[labels != IGNORE], minlength=3) for _, labels in samples).double()
    shares = counts / counts.sum()
    return torch.where(counts > 0, shares.clamp_min(1e-9) ** -exponent, torch.zeros(3)).float()


def selection_score(scores: dict) -> float:
    """What ``best`` maximises on validation: mean per-class accuracy plus pixel accuracy."""
    return scores["mean_class_accuracy"] + scores["pixel_accuracy"]


def best_epoch(history: List[dict]) -> dict:
    """The row of ``train_head``'s history whose weights the head ends with (validated runs only)."""
    return max(history, key=lambda row: selection_score(row["val"]))


def train_head(head: StabilityHead, train: List[Sample], val: List[Sample], conf: dict) -> List[dict]:
    """Train ``head`` in place; with ``val``, it ends with the epoch best on val. Returns one row per epoch."""
    conf = {**default_conf, **conf}
    weights = class_weights(train, conf["class_balance"])
    optimizer = torch.optim.AdamW(head.parameters(), lr=conf["lr"], weight_decay=conf["weight_decay"])
    steps = conf["epochs"] * sum(1 for _ in batches(train, conf["batch_images"]))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, conf["lr"], total_steps=max(steps, 1))
    generator = torch.Generator().manual_seed(conf["seed"])
    history, best, best_state = [], -1.0, None
    for epoch in tqdm(range(1, conf["epochs"] + 1), desc="stability head", unit="epoch"):
        head.train()
        losses = []
        for inputs, labels in batches(train, conf["batch_images"], generator):
            if conf["flip"] and torch.rand(1, generator=generator) < 0.5:
                inputs, labels = {k: v.flip(-1) for k, v in inputs.items()}, labels.flip(-1)
            loss = F.cross_entropy(head(inputs), labels, weight=weights, ignore_index=IGNORE)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        row = {"epoch": epoch, "loss": round(float(np.mean(losses)), 4)}
        if val:
            row["val"] = evaluate_head(head, val)
            if selection_score(row["val"]) > best:
                best, best_state = selection_score(row["val"]), copy.deepcopy(head.state_dict())
        history.append(row)
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    return history
