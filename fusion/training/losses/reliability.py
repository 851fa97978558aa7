"""Reliability: XFeat's own loss (how distinctive each descriptor is), or the keypoint teacher's map.

The reliability map multiplies the keypoint heatmap to rank keypoints, and its head reads the
descriptors: when fine-tuning moves the descriptors, a reliability that is not held in place drifts
and reorders the keypoints (held-out MMA@3 fell from 0.518 to 0.43 in 30 steps while the descriptors
alone cost 0.01). ``reliability_distill`` holds it to the frozen official XFeat's map.
"""

import torch
import torch.nn.functional as F

from .descriptor import match_confidence
from .registry import mean_or_none, register_term


def reliability_loss(predicted: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
    """L1 between predicted reliability (N,) in (0, 1) and the (detached) match confidence (N,), as XFeat.

    An L1 of probabilities is also safe under CUDA autocast, which refuses binary cross-entropy on
    probabilities (the head ends in a sigmoid, so there are no logits for the safe variant).
    """
    return F.l1_loss(predicted.float(), confidence.float())


@register_term("reliability", inputs=("student", "matches"), heads=("fused.backbone.heatmap_head",), detector=True)
def reliability_term(conf, student, matches):
    """Both images: the reliability of each true coarse match's cell in image 0 and in image 1."""
    reliability = student["reliability"].flatten(1)
    b = len(reliability) // 2
    losses = []
    for m in matches:
        target = match_confidence(m.raw0, m.raw1, conf["descriptor_scale"])
        losses.append((reliability_loss(reliability[m.pair, m.cells0], target)
                       + reliability_loss(reliability[b + m.pair, m.cells1], target)) / 2)
    return mean_or_none(losses)


@register_term("reliability_distill", inputs=("student", "teacher_reliability"),
               heads=("fused.backbone.heatmap_head",), detector=True)
def reliability_distill_term(conf, student, teacher_reliability):
    """L1 between the student's reliability map and the keypoint teacher's, over every cell of both images."""
    return reliability_loss(student["reliability"], teacher_reliability)
