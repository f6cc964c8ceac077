"""Gradient Episodic Memory (Lopez-Paz & Ranzato, 2017).

Per incoming batch: the loss gradient g on the batch, and the gradient g_k on the stored examples of every earlier
task k. When some g . g_k < 0 the update would raise an earlier task's loss, and g is replaced by the closest
vector (in L2) that has a non-negative dot product with every g_k, found through the dual quadratic program

    min_v 1/2 v^T (G G^T + eps I) v + (G g)^T v   subject to  v >= memory_strength,    g~ = G^T v + g,

solved with qpsolvers' ``quadprog`` backend, as GEM's ``project2cone2`` does (``memory_strength`` is its margin,
``eps`` its ridge for Gram matrices that are not positive definite). The memory holds, per earlier task, what the
``EpisodicMemory`` kept of it: lossless images or recollections, in one shared reservoir or one per task
(``memory.layout=per_task``, GEM's own layout).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from qpsolvers import solve_qp

from lossy_memory.strategies.base import ContinualStrategy


def project_to_cone(gradient: torch.Tensor, memories: torch.Tensor, margin: float = 0.5, eps: float = 1e-3) -> torch.Tensor:
    """GEM's projection of ``gradient`` [p] against the rows of ``memories`` [t, p] (the dual QP above)."""
    G = memories.detach().double().cpu().numpy()
    g = gradient.detach().double().cpu().numpy()
    t = G.shape[0]
    P = G @ G.T
    P = 0.5 * (P + P.T) + eps * np.eye(t)
    q = G @ g
    v = solve_qp(P, q, lb=np.full(t, float(margin)), solver="quadprog")
    if v is None:
        raise RuntimeError("GEM's quadratic program has no solution (quadprog); raise strategy.eps")
    return torch.from_numpy(v @ G + g).to(gradient.device, gradient.dtype)


class GEM(ContinualStrategy):
    """``memory_strength``: the QP margin (GEM: 0.5). ``eps``: ridge added to the Gram matrix (GEM: 1e-3).
    ``max_items_per_task``: at most this many stored items per earlier task enter its gradient (None: all)."""

    uses_memory = True

    def __init__(self, steps: int = 1, memory_strength: float = 0.5, eps: float = 1e-3, max_items_per_task: int | None = None):
        super().__init__(steps)
        if memory_strength < 0 or eps < 0:
            raise ValueError(f"strategy.memory_strength and strategy.eps must be >= 0, got {memory_strength} and {eps}")
        self.memory_strength, self.eps, self.max_items_per_task = float(memory_strength), float(eps), max_items_per_task
        self.projections = 0

    def memory_gradients(self, device: torch.device) -> torch.Tensor | None:
        """One gradient row per earlier task that has stored items; None when there is none."""
        rows = []
        for k in range(self.task):
            x, y, _ = self.memory.contents(task=k, device=device)
            if not len(x):
                continue
            if self.max_items_per_task is not None and len(x) > self.max_items_per_task:
                x, y = x[: self.max_items_per_task], y[: self.max_items_per_task]
            rows.append(self.loss_grad(F.cross_entropy(self.net(x), y)))
        return torch.stack(rows) if rows else None

    def observe(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        projected = 0
        for _ in range(self.steps):
            memories = self.memory_gradients(batch["x"].device)
            loss = F.cross_entropy(self.net(batch["x"]), batch["y"])
            self.ctx.optimizer.zero_grad(set_to_none=True)
            self.ctx.backward(loss)
            if memories is not None:
                g = self.flat_grad()
                if (memories @ g < 0).any():
                    self.set_flat_grad(project_to_cone(g, memories, self.memory_strength, self.eps))
                    projected += 1
            self.ctx.optimizer.step()
        self.projections += projected
        self.store(batch)
        return {"loss": loss.detach(), "projected": torch.tensor(float(projected))}
