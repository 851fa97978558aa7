"""InfoNCE with the K hardest negatives per anchor."""

import torch

from .registry import mean_or_none, register_term


def infonce_hard_negatives(desc0: torch.Tensor, desc1: torch.Tensor, top_k: int = 16,
                           temperature: float = 0.07) -> torch.Tensor:
    """-log p(positive) against the ``top_k`` most similar non-matching descriptors, both directions."""
    similarity = desc0 @ desc1.t() / temperature
    positive = similarity.diagonal()
    eye = torch.eye(len(desc0), dtype=torch.bool, device=desc0.device)
    losses = []
    for sim in (similarity, similarity.t()):
        negatives = sim.masked_fill(eye, float("-inf")).topk(min(top_k, len(desc0) - 1), dim=1).values
        logits = torch.cat([positive[:, None], negatives], 1)
        losses.append(torch.logsumexp(logits, 1) - positive)
    return torch.cat(losses).mean()


@register_term("infonce", inputs=("matches",))
def infonce_term(conf, matches):
    return mean_or_none([infonce_hard_negatives(m.desc0, m.desc1, **conf["infonce"]) for m in matches])
