"""Distillation from the SFD2 teacher: structural (several layers) and descriptor (through the adapter)."""

from typing import List, Sequence

import torch
import torch.nn.functional as F

from .registry import register_term


def affinity(features: torch.Tensor, grid: int) -> torch.Tensor:
    """Cosine self-similarity (B, n, n) of a map resized to grid x grid (channel-count independent)."""
    pooled = F.adaptive_avg_pool2d(features, grid).flatten(2)
    pooled = F.normalize(pooled, dim=1)
    return pooled.transpose(1, 2) @ pooled


def structural_losses(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], grid: int = 16,
                      kind: str = "l2") -> torch.Tensor:
    """Per-layer losses (L,) between student and teacher affinity structures."""
    losses = []
    for s, t in zip(student, teacher):
        a_s, a_t = affinity(s, grid), affinity(t.detach(), grid)
        losses.append(F.mse_loss(a_s, a_t) if kind == "l2" else F.smooth_l1_loss(a_s, a_t, beta=0.1))
    return torch.stack(losses)


def layer_weights(losses: torch.Tensor, mode: str = "inverse", temperature: float = 1.0) -> torch.Tensor:
    """Dynamic layer weights (sum 1) from detached losses: ``inverse`` (1/L) or ``softmax`` (L/T)."""
    values = losses.detach()
    if mode == "inverse":
        inverse = 1 / values.clamp_min(1e-8)
        return inverse / inverse.sum()
    if mode == "softmax":
        return torch.softmax(values / temperature, 0)
    raise ValueError(f"layer weighting {mode!r} is not one of inverse, softmax")


def structural_distillation(student: List[torch.Tensor], teacher: List[torch.Tensor], grid: int = 16,
                            kind: str = "l2", weighting: str = "inverse") -> torch.Tensor:
    losses = structural_losses(student, teacher, grid, kind)
    return (layer_weights(losses, weighting) * losses).sum()


def descriptor_distillation(student_desc: torch.Tensor, adapted_teacher: torch.Tensor,
                            valid: torch.Tensor = None) -> torch.Tensor:
    """1 - cosine between the student's dense descriptors and the adapted teacher descriptors."""
    cosine = F.cosine_similarity(student_desc, adapted_teacher, dim=1)
    if valid is None:
        return (1 - cosine).mean()
    return ((1 - cosine) * valid).sum() / valid.sum().clamp_min(1)


@register_term("structural", inputs=("student", "teacher"))
def structural_term(conf, student, teacher):
    """The student's 1/4, 1/8 and 1/16 maps against the teacher's 1/2, 1/4 and trunk maps."""
    return structural_distillation([student["map_1_4"], student["map_1_8"], student["map_1_16"]],
                                   [teacher["map_1_2"], teacher["map_1_4"], teacher["trunk"]],
                                   conf["structural"]["grid"], conf["structural"]["kind"],
                                   conf["structural"]["layer_weighting"])


@register_term("descriptor_distill", inputs=("descriptors", "adapted_teacher"), heads=("adapter",))
def descriptor_distill_term(conf, descriptors, adapted_teacher):
    return descriptor_distillation(descriptors, F.normalize(adapted_teacher, dim=1))


@register_term("descriptor_anchor", inputs=("descriptors", "xfeat_teacher"))
def descriptor_anchor_term(conf, descriptors, xfeat_teacher):
    """1 - cos to the frozen official XFeat's dense descriptors (the same space: no adapter)."""
    return descriptor_distillation(descriptors, F.normalize(xfeat_teacher["dense_descriptors"], dim=1))
