"""How much of its code space a categorical bottleneck uses: collapse shows as perplexity far below l."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class CodeUsagePerplexity(Metric):
    """Per-variable perplexity exp(H(p)) of the empirical value distribution, averaged over the c variables.

    l means every value is used equally; 1 means the variable always takes the same value (collapsed).
    """

    full_state_update = False

    def __init__(self, c: int, l: int, **kwargs):
        super().__init__(**kwargs)
        self.c, self.l = c, l
        self.add_state("counts", default=torch.zeros(c, l, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, codes: torch.Tensor) -> None:
        flat = codes.long() + torch.arange(self.c, device=codes.device) * self.l
        self.counts += torch.bincount(flat.flatten(), minlength=self.c * self.l).view(self.c, self.l)

    def compute(self) -> torch.Tensor:
        p = self.counts.float() / self.counts.sum(dim=1, keepdim=True).clamp_min(1)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=1)
        return entropy.exp().mean()
