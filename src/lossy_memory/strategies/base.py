"""The one interface every continual-learning strategy implements (in the spirit of Mammoth's ``observe``).

A strategy receives each incoming batch of the stream (``observe``) and makes its ``steps`` (N) updates of the
classifier, drawing everything it replays before the first of them (paper, section 2.4). It is told when a task
starts and ends (``before_task`` / ``after_task``), predicts for evaluation (``predict``: logits over all classes;
iCaRL overrides it with nearest-mean-of-exemplars), and keeps whatever memory it needs in the ``EpisodicMemory``
the learner gives it, so lossless images or recollections are a config choice for every strategy.

Strategies are plain objects: the learner (a LightningModule) hands them a ``StrategyContext`` at setup with the
network, its optimizer and how to backpropagate (``manual_backward`` under Lightning), so they run the same under
Lightning and in a plain loop (the tests).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lossy_memory.memory import EpisodicMemory
from lossy_memory.memory.buffers import Attributes
from lossy_memory.nets import Classifier


@dataclass
class StrategyContext:
    """What a strategy works with. ``task_train_set(t)``: task t's training examples (uint8 ImageTensorDataset),
    for strategies that revisit a finished task (iCaRL's herding)."""

    net: Classifier
    optimizer: torch.optim.Optimizer
    num_classes: int
    task_classes: Sequence[Sequence[int]]
    memory: EpisodicMemory | None = None
    backward: Callable[[torch.Tensor], None] = field(default=lambda loss: loss.backward())
    task_train_set: Callable[[int], Any] | None = None


def check_count(value: Any, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class ContinualStrategy:
    """Base class. ``steps``: N, updates per incoming batch. Subclasses set ``uses_memory`` and
    ``needs_disjoint_classes`` (checked against the stream before training), ``memory_layout`` when they need one
    grouping of the memory's stores (``EpisodicMemory``: "per_class" for exemplar sets), override ``item_attributes``
    when they keep something beside each stored item (paid from the memory's budget), and implement ``observe``."""

    uses_memory: bool = False
    needs_disjoint_classes: bool = False
    memory_layout: str | None = None

    def item_attributes(self, num_classes: int) -> Attributes:
        """Per-slot attributes kept with every stored item: name -> (shape, dtype)."""
        return {}

    def __init__(self, steps: int = 1):
        self.steps = check_count(steps, "strategy.steps (N, updates per incoming batch)")
        self.ctx: StrategyContext | None = None
        self.task = -1

    # -- lifecycle ------------------------------------------------------------------------------------------
    def setup(self, ctx: StrategyContext) -> None:
        """Check the stream suits the strategy (ValueError before any training) and keep the context."""
        if self.uses_memory and ctx.memory is None:
            raise ValueError(f"{type(self).__name__} keeps a memory: set model.memory (conf/memory: lossless, recollection, mixed)")
        if not self.uses_memory and ctx.memory is not None:
            raise ValueError(f"{type(self).__name__} keeps no memory: set memory=none")
        if self.needs_disjoint_classes:
            seen: dict[int, int] = {}
            for t, classes in enumerate(ctx.task_classes):
                for c in classes:
                    if c in seen:
                        raise ValueError(f"{type(self).__name__} needs tasks with disjoint classes (class-incremental), but class {c} "
                                         f"is in task {seen[c]} and task {t}: use a class-split stream (split MNIST, CIFAR-100, Omniglot)")
                    seen[c] = t
        self.ctx = ctx

    def before_task(self, task: int) -> None:
        self.task = task

    def after_task(self, task: int) -> None:
        pass

    # -- training and prediction ---------------------------------------------------------------------------------
    def observe(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """N updates for one incoming batch {"x", "y", "task"} of one task; returns what to log, as detached tensors
        (read on the host only when logged, so a step never waits for the device)."""
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def state_dict(self) -> dict[str, Any]:
        return {"task": self.task}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.task = state["task"]

    # -- helpers ------------------------------------------------------------------------------------------------------
    @property
    def net(self) -> nn.Module:
        return self.ctx.net

    @property
    def memory(self) -> EpisodicMemory:
        return self.ctx.memory

    def update(self, loss: torch.Tensor) -> None:
        optimizer = self.ctx.optimizer
        optimizer.zero_grad(set_to_none=True)
        self.ctx.backward(loss)
        optimizer.step()

    def parameters(self) -> list[nn.Parameter]:
        return [p for p in self.net.parameters() if p.requires_grad]

    def flat_grad(self) -> torch.Tensor:
        """The current .grad of every parameter as one vector (zeros where a parameter got none)."""
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in self.parameters()])

    def set_flat_grad(self, vector: torch.Tensor) -> None:
        offset = 0
        for p in self.parameters():
            n = p.numel()
            p.grad = vector[offset : offset + n].view_as(p).clone()
            offset += n

    def loss_grad(self, loss: torch.Tensor) -> torch.Tensor:
        """Gradient of ``loss`` w.r.t. the parameters as one vector, leaving every .grad untouched."""
        params = self.parameters()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])

    def store(self, batch: dict[str, torch.Tensor]) -> None:
        """Offer the incoming batch (of the current task) to the memory, after training on it."""
        self.memory.add(batch["x"], batch["y"], self.task)
