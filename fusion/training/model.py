"""What training optimises: the fused model plus the distillation adapter, which inference never needs."""

from typing import Dict, Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..features.fused import FusedXFeat
from .adapter import FusionAdapter


class TrainingModel(nn.Module):
    """``fused`` (saved as the fused checkpoint) and ``adapter`` (teacher -> student descriptor space).

    With ``frozen_batchnorm`` every BatchNorm stays in eval mode, also under ``train()``: fine-tuning
    from pretrained weights keeps their running statistics, which small training batches of other
    images would otherwise overwrite (the network's weights barely move while its normalisation,
    and so its output, changes).
    """

    default_conf = {"adapter": {"type": "linear", "teacher_dim": 128, "student_dim": 64}, "xfeat_weights": None}

    def __init__(self, conf: dict = None, frozen_batchnorm: bool = False):
        super().__init__()
        conf = {**self.default_conf, **(conf or {})}
        self.fused = FusedXFeat({"xfeat_weights": conf["xfeat_weights"]})
        self.adapter = FusionAdapter({**self.default_conf["adapter"], **conf["adapter"]})
        self.frozen_batchnorm = frozen_batchnorm

    def train(self, mode: bool = True) -> "TrainingModel":
        super().train(mode)
        if mode and self.frozen_batchnorm:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def forward(self, image: torch.Tensor, teacher_descriptors: torch.Tensor = None,
                fine_query: Tuple[torch.Tensor, ...] = None) -> Dict[str, torch.Tensor]:
        """The fused model's maps, and the training extras.

        Computed here so that DistributedDataParallel sees every parameter used:
        ``teacher_descriptors`` -> ``adapted_teacher`` (FusionAdapter, conditioned on the detached
        student map so that distillation cannot shape the student through the adapter's input), and
        ``fine_query`` (image and cell indices of coarse matches: rows0, cells0, rows1, cells1) -> ``fine_logits``.
        """
        maps = self.fused(image)
        if teacher_descriptors is not None:
            maps["adapted_teacher"] = self.adapter(teacher_descriptors, maps["dense_descriptors"].detach())
        if fine_query is not None:
            rows0, cells0, rows1, cells1 = fine_query
            flat = maps["dense_descriptors"].flatten(2)
            pairs = torch.cat([flat[rows0, :, cells0], flat[rows1, :, cells1]], 1)
            maps["fine_logits"] = self.fused.backbone.fine_matcher(pairs)
        return maps
