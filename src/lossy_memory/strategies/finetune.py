"""Online fine-tuning: plain SGD on the stream, no memory (the lower bound every strategy must beat)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lossy_memory.strategies.base import ContinualStrategy


class OnlineFineTuning(ContinualStrategy):
    """N cross-entropy updates on each incoming batch."""

    def observe(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for _ in range(self.steps):
            loss = F.cross_entropy(self.net(batch["x"]), batch["y"])
            self.update(loss)
        return {"loss": loss.detach()}
