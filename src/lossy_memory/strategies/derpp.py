"""Dark Experience Replay++ (Buzzega et al., 2020): replay with the logits the network gave when an item was stored.

loss = CE(incoming) + alpha * MSE(net(x1), stored logits of x1) + beta * CE(net(x2), y2), with (x1, x2) two
independent draws from the memory per update, all 2N drawn before the first of the N updates. The logits live
beside the memory's items, slot for slot (``EpisodicMemory.add`` says which slots a batch landed in), so the items
themselves may be lossless images or recollections.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from lossy_memory.strategies.base import ContinualStrategy, check_count


class DERPP(ContinualStrategy):
    uses_memory = True

    def __init__(self, steps: int = 1, alpha: float = 0.1, beta: float = 0.5, replay_size: int | None = None):
        super().__init__(steps)
        if alpha < 0 or beta < 0:
            raise ValueError(f"strategy.alpha and strategy.beta must be >= 0, got {alpha} and {beta}")
        self.alpha, self.beta = float(alpha), float(beta)
        self.replay_size = None if replay_size is None else check_count(replay_size, "strategy.replay_size")
        self.logits: dict[int, torch.Tensor] = {}  # store key -> [store capacity, num_classes]

    def _stored_logits(self, drawn) -> torch.Tensor:
        out = None
        for key in drawn.store.unique().tolist():
            table = self.logits[key]
            out = torch.empty(len(drawn.slots), table.shape[1]) if out is None else out
            at = drawn.store == key
            out[at] = table[drawn.slots[at]]
        return out.to(drawn.x.device)

    def observe(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        x, y = batch["x"], batch["y"]
        n = self.replay_size or len(x)
        draws = [(self.memory.sample(n, x.device), self.memory.sample(n, x.device)) for _ in range(self.steps)] if len(self.memory) else []
        for step in range(self.steps):
            logits = self.net(x)
            loss = F.cross_entropy(logits, y)
            if draws:
                first, second = draws[step]
                loss = loss + self.alpha * F.mse_loss(self.net(first.x), self._stored_logits(first))
                loss = loss + self.beta * F.cross_entropy(self.net(second.x), second.y)
            if step == 0:
                stored = logits.detach().cpu()  # the logits seen with the batch, before training on it (as DER++)
            self.update(loss)
        for written in self.memory.add(x, y, int(batch["task"][0])):
            table = self.logits.get(written.store)
            capacity = self.memory.stores[written.store].capacity
            if table is None or len(table) != capacity:
                table = self.logits[written.store] = torch.zeros(capacity, stored.shape[1])
            table[written.slots] = stored[written.sources]
        return {"loss": loss.item()}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "logits": {k: v.clone() for k, v in self.logits.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.logits = {int(k): v.clone() for k, v in state["logits"].items()}
