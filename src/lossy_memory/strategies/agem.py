"""Averaged GEM (Chaudhry et al., 2019): one reference gradient from a memory sample instead of one per task.

g_ref is the loss gradient on ``sample_size`` items drawn from the memory; when g . g_ref < 0 the update uses
g~ = g - (g . g_ref / g_ref . g_ref) g_ref, so that g~ . g_ref = 0. The memory is a reservoir over the stream
(lossless images or recollections), filled as batches arrive (as Mammoth's ``agem_r``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lossy_memory.strategies.base import ContinualStrategy, check_count


def agem_project(gradient: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """A-GEM's projection: the gradient unchanged when it agrees with the reference, else its component orthogonal to it."""
    dot = gradient @ reference
    if dot >= 0:
        return gradient
    return gradient - dot / (reference @ reference).clamp_min(1e-12) * reference


class AGEM(ContinualStrategy):
    uses_memory = True

    def __init__(self, steps: int = 1, sample_size: int = 256):
        super().__init__(steps)
        self.sample_size = check_count(sample_size, "strategy.sample_size")
        self.projections = 0

    def observe(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["x"]
        references = self.memory.sample_batches(self.steps, self.sample_size, x.device) if len(self.memory) else []
        projected = 0
        for step in range(self.steps):
            reference = None
            if references:
                drawn = references[step]
                reference = self.loss_grad(F.cross_entropy(self.net(drawn.x), drawn.y))
            loss = F.cross_entropy(self.net(x), batch["y"])
            self.ctx.optimizer.zero_grad(set_to_none=True)
            self.ctx.backward(loss)
            if reference is not None:
                g = self.flat_grad()
                if g @ reference < 0:
                    self.set_flat_grad(agem_project(g, reference))
                    projected += 1
            self.ctx.optimizer.step()
        self.projections += projected
        self.store(batch)
        return {"loss": loss.detach(), "projected": torch.tensor(float(projected))}
