"""What training optimises: the fused model plus the distillation adapter, which inference never needs."""

from typing import Dict, Tuple

import torch
from torch import nn

from ..features.fused import FusedXFeat
from .adapter import FusionAdapter


class TrainingModel(nn.Module):
    """``fused`` (saved as the fused checkpoint) and ``adapter`` (teacher -> student descriptor space)."""

    default_conf = {"adapter": {"type": "linear", "teacher_dim": 128, "student_dim": 64}, "xfeat_weights": None}

    def __init__(self, conf: dict = None):
        super().__init__()
        conf = {**self.default_conf, **(conf or {})}
        self.fused = FusedXFeat({"xfeat_weights": conf["xfeat_weights"]})
        self.adapter = FusionAdapter({**self.default_conf["adapter"], **conf["adapter"]})

    def forward(self, image: torch.Tensor, teacher_descriptors: torch.Tensor = None,
                fine_query: Tuple[torch.Tensor, ...] = None) -> Dict[str, torch.Tensor]:
        """The fused model's maps, and the training extras.

        Computed here so that DistributedDataParallel sees every parameter used:
        ``teacher_descriptors`` -> ``adapted_teacher`` (FusionAdapter), and ``fine_query`` (image
        and cell indices of coarse matches: rows0, cells0, rows1, cells1) -> ``fine_logits``.
        """
        maps = self.fused(image)
        if teacher_descriptors is not None:
            maps["adapted_teacher"] = self.adapter(teacher_descriptors, maps["dense_descriptors"])
        if fine_query is not None:
            rows0, cells0, rows1, cells1 = fine_query
            flat = maps["dense_descriptors"].flatten(2)
            pairs = torch.cat([flat[rows0, :, cells0], flat[rows1, :, cells1]], 1)
            maps["fine_logits"] = self.fused.backbone.fine_matcher(pairs)
        return maps
