"""XFeat's descriptor loss: dual-softmax negative log-likelihood of the true correspondences.

As XFeat trains it: on the raw (unnormalised) 64-d descriptors, logits = ``scale`` x dot product,
the objective the official weights were trained to.
"""

import torch
import torch.nn.functional as F

from .registry import mean_or_none, register_term


def dual_softmax_nll(desc0: torch.Tensor, desc1: torch.Tensor, scale: float = 0.2) -> torch.Tensor:
    """Mean NLL of matching row i to column i in both softmax directions; (N, D) descriptors."""
    logits = desc0 @ desc1.t() * scale
    target = torch.arange(len(desc0), device=desc0.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def match_confidence(desc0: torch.Tensor, desc1: torch.Tensor, scale: float = 0.2) -> torch.Tensor:
    """How distinctive each correspondence is (N,): the product of the best dual-softmax probability of
    row i and of column i, XFeat's reliability target (detached)."""
    logits = (desc0 @ desc1.t() * scale).detach()
    return logits.softmax(1).max(1).values * logits.softmax(0).max(0).values


@register_term("descriptor", inputs=("matches",))
def descriptor_term(conf, matches):
    return mean_or_none([dual_softmax_nll(m.raw0, m.raw1, conf["descriptor_scale"]) for m in matches])
