"""Adaptive loss weighting: none (static), uncertainty (learned log-variances), GradNorm."""

from typing import Dict, Sequence

import torch
from torch import nn

WEIGHTINGS = ("none", "uncertainty", "gradnorm")


class LossWeighting(nn.Module):
    """Combines named losses into a total; ``static`` weights scale each term in every mode."""

    def __init__(self, names: Sequence[str], static: Dict[str, float], mode: str = "none", alpha: float = 1.5):
        super().__init__()
        if mode not in WEIGHTINGS:
            raise ValueError(f"weighting {mode!r} is not one of {WEIGHTINGS}")
        self.names, self.static, self.mode, self.alpha = list(names), dict(static), mode, alpha
        self.log_vars = nn.Parameter(torch.zeros(len(self.names)), requires_grad=mode == "uncertainty")
        self.gradnorm_weights = nn.Parameter(torch.ones(len(self.names)), requires_grad=mode == "gradnorm")
        self.register_buffer("initial_losses", torch.zeros(len(self.names)))

    def forward(self, losses: Dict[str, torch.Tensor]) -> torch.Tensor:
        total = 0.0
        for i, name in enumerate(self.names):
            if name not in losses:
                continue
            term = self.static[name] * losses[name]
            if self.mode == "uncertainty":
                term = torch.exp(-self.log_vars[i]) * term + self.log_vars[i]
            elif self.mode == "gradnorm":
                term = float(self.gradnorm_weights[i]) * term  # a copy: gradnorm_step updates in place
            total = total + term
        return total

    def gradnorm_step(self, losses: Dict[str, torch.Tensor], shared: torch.Tensor, lr: float = 0.025) -> None:
        """One GradNorm update of the task weights from gradient norms at the ``shared`` parameter."""
        present = [i for i, n in enumerate(self.names) if n in losses and losses[n].requires_grad]
        if len(present) < 2:
            return
        values = torch.stack([self.static[self.names[i]] * losses[self.names[i]] for i in present])
        if not bool(self.initial_losses[present].gt(0).all()):
            self.initial_losses[present] = values.detach().clamp_min(1e-8)
        raw = torch.stack([torch.autograd.grad(v, shared, retain_graph=True)[0].norm() for v in values])
        norms = self.gradnorm_weights[present] * raw  # ||grad(w_i L_i)|| = w_i ||grad L_i||
        ratios = values.detach() / self.initial_losses[present]
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
            return {f"weight/{n}": w.item() for n, w in zip(self.names, self.gradnorm_weights.detach())}
        return {}
