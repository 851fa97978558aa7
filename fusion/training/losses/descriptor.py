"""XFeat's descriptor loss: dual-softmax negative log-likelihood of the true correspondences."""

import torch
import torch.nn.functional as F


def dual_softmax_nll(desc0: torch.Tensor, desc1: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Mean NLL of matching row i to column i in both softmax directions; (N, D) L2-normalised inputs."""
    logits = desc0 @ desc1.t() / temperature
    target = torch.arange(len(desc0), device=desc0.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def match_confidence(desc0: torch.Tensor, desc1: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Dual-softmax probability of each true correspondence (N,), used as the reliability target."""
    logits = desc0 @ desc1.t() / temperature
    return (logits.softmax(1).diagonal() * logits.softmax(0).diagonal()).detach()
