"""Experience replay over the memory: lossless images or recollections, as the memory's kind says.

Each incoming batch becomes N training batches, each the incoming examples plus one mini-batch drawn from the
memory, all drawn and decoded (in one call) before the first update (paper, section 2.4); the incoming batch is
then offered to the memory. With a recollection memory this is the paper's recollection replay.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lossy_memory.strategies.base import ContinualStrategy, check_count


class ExperienceReplay(ContinualStrategy):
    """``replay_size``: items per replayed mini-batch (None: as many as the incoming batch)."""

    uses_memory = True

    def __init__(self, steps: int = 1, replay_size: int | None = None):
        super().__init__(steps)
        self.replay_size = None if replay_size is None else check_count(replay_size, "strategy.replay_size")

    def observe(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mixed_batches = self.memory.replay_batches({**batch, "x": self.memory.training_view(batch["x"])}, self.steps, self.replay_size)
        for mixed in mixed_batches:
            loss = F.cross_entropy(self.net(mixed["x"]), mixed["y"])
            self.update(loss)
        self.store(batch)
        return {"loss": loss.detach(), "replayed": len(mixed["y"]) - len(batch["y"])}
