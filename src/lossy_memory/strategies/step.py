"""The lean step: the work of one incoming batch of a task stream, with no Lightning in it.

One ``ContinualStep`` is what the LightningModule (``models.ContinualLearner``), the benchmark
(``benchmarks/bench_continual``) and the tests run, so there is one copy of it:

1. ``prepare``: the memory is built for the stream (budget, grouping and per-slot attributes the strategy needs),
   then the strategy is set up on it;
2. per incoming batch (``__call__``): the online generator's update(s) on the incoming images and its own
   recollections (recollection and mixed memories), then ``strategy.observe`` (N replay draws decoded before the
   N classifier updates, then the batch offered to the memory);
3. at task boundaries: ``begin_task`` / ``end_task`` (the strategy's hooks, the generator's anchor snapshot).

Everything it returns to log is a detached tensor or a Python number: nothing in a step waits for the device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from lossy_memory.memory import EpisodicMemory
from lossy_memory.strategies.base import ContinualStrategy, StrategyContext


class ContinualStep:
    """``generator_steps``: the online generator's updates per incoming batch (0: it stays as it is). ``backward``:
    how to backpropagate (``manual_backward`` under Lightning). The optimizers are given by the caller (Lightning
    owns them in a LightningModule), or made here (``optimizers()``) for a plain loop."""

    def __init__(self, strategy: ContinualStrategy, memory: EpisodicMemory | None, generator_steps: int = 1,
                 backward: Callable[[torch.Tensor], None] = torch.Tensor.backward):
        if not isinstance(strategy, ContinualStrategy):
            raise ValueError(f"model.strategy must be a ContinualStrategy (conf/strategy), got {type(strategy).__name__}")
        if memory is not None and not isinstance(memory, EpisodicMemory):
            raise ValueError(f"model.memory must be an EpisodicMemory (conf/memory) or null, got {type(memory).__name__}")
        if generator_steps < 0:
            raise ValueError(f"model.generator_steps must be >= 0, got {generator_steps}")
        self.strategy = strategy
        self.memory = memory if strategy.uses_memory else None  # a memory-free strategy stores nothing, trains no generator
        self.generator_steps = int(generator_steps)
        self.backward = backward
        self.classifier_optimizer: torch.optim.Optimizer | None = None
        self.generator_optimizer: torch.optim.Optimizer | None = None

    @property
    def trains_generator(self) -> bool:
        return self.memory is not None and self.memory.online is not None and self.generator_steps > 0

    def prepare(self, net: torch.nn.Module, image_shape: Sequence[int], num_classes: int, task_classes: Sequence[Sequence[int]],
                task_train_set: Callable[[int], Any] | None = None, ranks: int = 1) -> None:
        """Build the memory for the stream as the strategy needs it (``ranks``: DDP processes sharing its budget), then
        set the strategy up (ValueError on bad input)."""
        if self.memory is not None:
            self.memory.build(image_shape, num_classes, len(task_classes), layout=self.strategy.memory_layout,
                              attributes=self.strategy.item_attributes(num_classes), who=type(self.strategy).__name__,
                              stream_classes=len({c for classes in task_classes for c in classes}), ranks=ranks)
        self.strategy.setup(StrategyContext(net=net, optimizer=None, num_classes=num_classes, task_classes=task_classes,
                                            memory=self.memory, backward=self.backward, task_train_set=task_train_set))

    def optimizers(self, classifier_optimizer: Callable[..., torch.optim.Optimizer]) -> list[torch.optim.Optimizer]:
        """The classifier's optimizer (from its factory) and, when the generator trains, the generator's."""
        optimizers = [classifier_optimizer(params=self.strategy.net.parameters())]
        if self.trains_generator:
            optimizers.append(self.memory.online.make_optimizer())
        return optimizers

    def use_optimizers(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        self.classifier_optimizer = self.strategy.ctx.optimizer = optimizers[0]
        self.generator_optimizer = optimizers[1] if self.trains_generator else None

    def use_backward(self, backward: Callable[[torch.Tensor], None]) -> None:
        self.backward = backward
        if self.strategy.ctx is not None:
            self.strategy.ctx.backward = backward

    def begin_task(self, task: int) -> None:
        self.strategy.before_task(task)

    def end_task(self, task: int) -> None:
        self.strategy.after_task(task)
        if self.memory is not None:
            self.memory.end_task(task)

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One incoming batch {"x" (float in [0, 1]), "y", "task"} of the current task; returns what to log."""
        logs = {}
        if self.trains_generator:
            memory = self.memory
            logs["generator_loss"] = memory.online.update(batch["x"], memory.draw if len(memory) else None,
                                                          self.generator_optimizer, self.backward, self.generator_steps)
        logs.update(self.strategy.observe(batch))
        return logs
