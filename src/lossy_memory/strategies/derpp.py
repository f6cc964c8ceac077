"""Dark Experience Replay++ (Buzzega et al., 2020): replay with the logits the network gave when an item was stored.

loss = CE(incoming) + alpha * MSE(net(x1), stored logits of x1) + beta * CE(net(x2), y2), with (x1, x2) two
independent draws from the memory per update, all 2N drawn before the first of the N updates. The logits are a
per-slot attribute of the memory (``item_attributes``): stored with each item, drawn with it, and paid from the
memory's bit budget at ``logit_dtype`` (float32 as DER++; float16 or bfloat16 keep twice the items), so the items
themselves may be lossless images or recollections and the comparison stays at equal bits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lossy_memory.memory.buffers import Attributes
from lossy_memory.strategies.base import ContinualStrategy, check_count

LOGIT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class DERPP(ContinualStrategy):
    uses_memory = True

    def __init__(self, steps: int = 1, alpha: float = 0.1, beta: float = 0.5, replay_size: int | None = None,
                 logit_dtype: str = "float32"):
        super().__init__(steps)
        if alpha < 0 or beta < 0:
            raise ValueError(f"strategy.alpha and strategy.beta must be >= 0, got {alpha} and {beta}")
        if logit_dtype not in LOGIT_DTYPES:
            raise ValueError(f"strategy.logit_dtype must be one of {sorted(LOGIT_DTYPES)}, got {logit_dtype!r}")
        self.alpha, self.beta = float(alpha), float(beta)
        self.replay_size = None if replay_size is None else check_count(replay_size, "strategy.replay_size")
        self.logit_dtype = LOGIT_DTYPES[logit_dtype]

    def item_attributes(self, num_classes: int) -> Attributes:
        return {"logits": ((num_classes,), self.logit_dtype)}

    def observe(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = batch["x"], batch["y"]
        draws = self.memory.sample_batches(2 * self.steps, self.replay_size or len(x), x.device) if len(self.memory) else []
        for step in range(self.steps):
            logits = self.net(x)
            loss = F.cross_entropy(logits, y)
            if draws:
                first, second = draws[2 * step], draws[2 * step + 1]
                loss = loss + self.alpha * F.mse_loss(self.net(first.x), first.attributes["logits"].to(logits.dtype))
                loss = loss + self.beta * F.cross_entropy(self.net(second.x), second.y)
            if step == 0:
                stored = logits.detach()  # the logits seen with the batch, before training on it (as DER++)
            self.update(loss)
        self.memory.add(x, y, self.task, {"logits": stored})
        return {"loss": loss.detach()}
