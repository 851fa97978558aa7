"""Adaptive loss weighting: none (static), uncertainty (learned log-variances), GradNorm."""

from typing import Dict, Sequence

import torch
from torch import nn

from ..distributed import all_reduce_mean

WEIGHTINGS = ("none", "uncertainty", "gradnorm")


class LossWeighting(nn.Module):
    """Combines named losses into a total; ``static`` weights scale each term in every mode.

    GradNorm (Chen et al., ICML 2018) measures each term's gradient norm over all the trainable
    parameters it is given rather than over one "last shared layer": in XFeat the keypoint head reads
    the image directly and shares no layer with the descriptor branch, so any single layer would see
    zero gradient from some terms. Each term's initial loss is recorded when the term first appears
    (a decoupled schedule adds terms later). Under DDP the losses and norms are averaged over ranks
    first, and the trainer averages the log-variances' gradients, so every rank holds the same weights.
    """

    def __init__(self, names: Sequence[str], static: Dict[str, float], mode: str = "none", alpha: float = 1.5):
        super().__init__()
        if mode not in WEIGHTINGS:
            raise ValueError(f"weighting {mode!r} is not one of {WEIGHTINGS}")
        self.names, self.static, self.mode, self.alpha = list(names), dict(static), mode, alpha
        self.log_vars = nn.Parameter(torch.zeros(len(self.names)), requires_grad=mode == "uncertainty")
        self.gradnorm_weights = nn.Parameter(torch.ones(len(self.names)), requires_grad=mode == "gradnorm")
        self.register_buffer("initial_losses", torch.zeros(len(self.names)))
        self.register_buffer("gradient_norms", torch.zeros(len(self.names)))

    def forward(self, losses: Dict[str, torch.Tensor]) -> torch.Tensor:
        total = 0.0
        task_weights = self.gradnorm_weights.detach().clone()  # a copy: gradnorm_step updates them in place
        for i, name in enumerate(self.names):
            if name not in losses:
                continue
            term = self.static[name] * losses[name]
            if self.mode == "uncertainty":
                term = torch.exp(-self.log_vars[i]) * term + self.log_vars[i]
            elif self.mode == "gradnorm":
                term = task_weights[i] * term
            total = total + term
        return total

    def gradnorm_step(self, losses: Dict[str, torch.Tensor], parameters: Sequence[torch.Tensor],
                      lr: float = 0.025, loss_scale: float = 1.0) -> None:
        """One GradNorm update of the task weights from each term's gradient norm over ``parameters``.

        ``loss_scale`` (AMP's current scale) keeps half-precision gradients from underflowing.
        """
        present = [i for i, n in enumerate(self.names) if n in losses and losses[n].requires_grad]
        if len(present) < 2:
            return
        values = torch.stack([self.static[self.names[i]] * losses[self.names[i]] for i in present])
        raw = []
        for value in values:
            grads = torch.autograd.grad(value * loss_scale, parameters, retain_graph=True, allow_unused=True)
            raw.append(torch.sqrt(sum(g.float().pow(2).sum() for g in grads if g is not None)) / loss_scale
                       if any(g is not None for g in grads) else values.new_zeros(()))
        raw = all_reduce_mean(torch.stack(raw).detach())
        current = all_reduce_mean(values.detach())
        if not (torch.isfinite(raw).all() and torch.isfinite(current).all()):
            return
        index = torch.tensor(present, device=self.initial_losses.device)
        new = self.initial_losses[index] == 0
        self.initial_losses[index[new]] = current[new].clamp_min(1e-8)
        self.gradient_norms[index] = raw
        norms = self.gradnorm_weights[index] * raw  # ||grad(w_i L_i)|| = w_i ||grad L_i||
        ratios = current / self.initial_losses[index]
        target = (norms.mean() * (ratios / ratios.mean()) ** self.alpha).detach()
        grad = torch.autograd.grad((norms - target).abs().sum(), self.gradnorm_weights)[0]
        with torch.no_grad():
            self.gradnorm_weights -= lr * grad
            self.gradnorm_weights.clamp_(min=1e-3)
            self.gradnorm_weights *= len(self.names) / self.gradnorm_weights.sum()

    def state(self) -> Dict[str, float]:
        if self.mode == "uncertainty":
            return {f"weight/{n}": torch.exp(-v).item() for n, v in zip(self.names, self.log_vars.detach())}
        if self.mode == "gradnorm":
            return {**{f"weight/{n}": w.item() for n, w in zip(self.names, self.gradnorm_weights.detach())},
                    **{f"gradnorm/{n}": g.item() for n, g in zip(self.names, self.gradient_norms)}}
        return {}
