"""FusionAdapter: projects teacher features onto the student's feature space for distillation."""

import torch
from torch import nn

ADAPTER_TYPES = ("linear", "conv_attn", "film")


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) map (a learned scale, no shift)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class FusionAdapter(nn.Module):
    """1x1 conv + LayerNorm from teacher to student channels, optionally gated by the student.

    ``linear``: projection only. ``conv_attn``: the projection is re-weighted by a spatial gate and a
    channel gate computed from both maps (cross-gating, on the projection's magnitude). ``film``: the
    student map predicts a per-channel, per-cell scale in (0, 2) of the projection.

    Every variant is an odd function of the teacher map (A(-t) = -A(t)): nothing is added to the
    projection (no bias, no FiLM shift) and the gates see only its magnitude. Otherwise the adapter
    can make its output look like the student without any teacher information (an additive
    student path copies the student, a constant or a sign-selective gate gives its mean
    descriptor), descriptor distillation drops towards zero whatever the teacher holds, and it only
    pulls the student towards itself. Against a teacher of pure noise, 1 - cos stays near 1
    (tests/test_models.py).
    """

    default_conf = {"type": "linear", "teacher_dim": 128, "student_dim": 64}

    def __init__(self, conf: dict = None):
        super().__init__()
        self.conf = conf = {**self.default_conf, **(conf or {})}
        if conf["type"] not in ADAPTER_TYPES:
            raise ValueError(f"adapter type {conf['type']!r} is not one of {ADAPTER_TYPES}")
        teacher, student = conf["teacher_dim"], conf["student_dim"]
        self.project = nn.Sequential(nn.Conv2d(teacher, student, 1, bias=False), ChannelLayerNorm(student))
        if conf["type"] == "conv_attn":
            self.spatial_gate = nn.Conv2d(2 * student, 1, 3, padding=1)
            self.channel_gate = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Conv2d(2 * student, student, 1)
            )
        elif conf["type"] == "film":
            self.film = nn.Conv2d(student, student, 1)
            nn.init.zeros_(self.film.weight)  # starts as the identity scale
            nn.init.zeros_(self.film.bias)

    def forward(self, teacher: torch.Tensor, student: torch.Tensor = None) -> torch.Tensor:
        """Teacher map (B, Ct, H, W) -> student space (B, Cs, h, w), resized to ``student``'s size."""
        if student is not None and teacher.shape[-2:] != student.shape[-2:]:
            teacher = nn.functional.interpolate(
                teacher, student.shape[-2:], mode="bilinear", align_corners=False
            )
        projected = self.project(teacher)
        kind = self.conf["type"]
        if kind == "linear":
            return projected
        if student is None:
            raise ValueError(f"adapter type {kind!r} needs the student map")
        if kind == "conv_attn":
            both = torch.cat([projected.abs(), student], 1)
            return projected * torch.sigmoid(self.spatial_gate(both)) * torch.sigmoid(
                self.channel_gate(both)
            )
        return projected * 2 * torch.sigmoid(self.film(student))
