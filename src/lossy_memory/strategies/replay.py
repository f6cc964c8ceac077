"""Experience replay over a reservoir: lossless images or recollections, as the memory's kind says.

Each incoming batch becomes N training batches, each the incoming examples plus one mini-batch drawn from the
memory, all drawn (and decoded) before the first update (``ReplayInterleaver``, paper section 2.4); the incoming
batch is then offered to the reservoir. With a recollection memory this is the paper's recollection replay.
A per-task memory (``memory.layout=per_task``) is drawn from by ``EpisodicMemory.sample`` the same way: N
mini-batches drawn and decoded before the updates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lossy_memory.memory.replay import ReplayInterleaver
from lossy_memory.strategies.base import ContinualStrategy, StrategyContext, check_count


class ExperienceReplay(ContinualStrategy):
    """``replay_size``: items per replayed mini-batch (None: as many as the incoming batch)."""

    uses_memory = True

    def __init__(self, steps: int = 1, replay_size: int | None = None):
        super().__init__(steps)
        self.replay_size = None if replay_size is None else check_count(replay_size, "strategy.replay_size")
        self.interleaver: ReplayInterleaver | None = None

    def setup(self, ctx: StrategyContext) -> None:
        super().setup(ctx)
        if ctx.memory.layout == "shared":
            self.interleaver = ReplayInterleaver(ctx.memory.shared_store(), self.steps, self.replay_size, ctx.memory.sampling)

    def batches(self, batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """The N training batches: incoming examples plus one replayed mini-batch each, all drawn now."""
        if self.interleaver is not None:
            return self.interleaver.interleave(batch, decoder=self.memory.decoder)
        x, y = batch["x"], batch["y"]
        if not len(self.memory):
            return [{"x": x, "y": y, "replayed": torch.zeros(len(x), dtype=torch.bool)}] * self.steps
        draws = [self.memory.sample(self.replay_size or len(x), x.device) for _ in range(self.steps)]
        return [{"x": torch.cat([x, d.x.to(x.dtype)]), "y": torch.cat([y, d.y]),
                 "replayed": torch.cat([torch.zeros(len(x), dtype=torch.bool), torch.ones(len(d.x), dtype=torch.bool)])} for d in draws]

    def observe(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        mixed_batches = self.batches({**batch, "x": self.memory.training_view(batch["x"])})
        for mixed in mixed_batches:
            loss = F.cross_entropy(self.net(mixed["x"]), mixed["y"])
            self.update(loss)
        self.store(batch)
        return {"loss": loss.item(), "replayed": float(mixed_batches[-1]["replayed"].sum())}
