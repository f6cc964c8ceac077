"""Experience replay from condensed memories (Zhao, Mopuri, Bilen, ICLR 2021, section 4.3: continual learning).

Instead of a reservoir of incoming examples, the memory holds, for every class seen, ``m`` images made at the end
of its task from the task's training set: by gradient matching (``selection="condense"``, ``condenser`` is
``lossy_memory.models.gradient_matching.condense`` with its settings) or, as the condensation paper's baselines,
the class's herded (pixel features) or random real examples. The images are stored 8-bit, one memory store per
class, so they cost exactly what lossless images cost; ``m`` is the budget's lossless items divided by the
stream's classes, fixed from the start, so the memory never outgrows its budget. Like iCaRL's herding, this
revisits the finished task's training set once, at its end. Between task ends, each incoming batch is replayed
with N mini-batches drawn from the memory (``ExperienceReplay``); incoming examples are not stored.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lossy_memory.memory.coresets import select_coreset
from lossy_memory.memory.synthetic import SyntheticSet
from lossy_memory.strategies.base import StrategyContext
from lossy_memory.strategies.replay import ExperienceReplay

SELECTIONS = ("condense", "herding", "random")


class CondensedReplay(ExperienceReplay):
    """``condenser(images, labels, images_per_class=m, seed=s) -> SyntheticSet`` (a partial of
    ``models.gradient_matching.condense``); needed for ``selection="condense"`` only."""

    needs_disjoint_classes = True
    memory_layout = "per_class"  # one store per class, made at each task's end

    def __init__(self, steps: int = 1, replay_size: int | None = None, selection: str = "condense",
                 condenser: Callable[..., SyntheticSet] | None = None, seed: int = 0):
        super().__init__(steps, replay_size)
        if selection not in SELECTIONS:
            raise ValueError(f"strategy.selection must be one of {SELECTIONS}, got {selection!r}")
        if selection == "condense" and condenser is None:
            raise ValueError("strategy.selection=condense needs strategy.condenser (lossy_memory.models.gradient_matching.condense)")
        self.selection, self.condenser, self.seed = selection, condenser, int(seed)
        self.images_per_class = 0

    def setup(self, ctx: StrategyContext) -> None:
        super().setup(ctx)
        if ctx.memory.kind != "lossless":
            raise ValueError(f"condensed memories are 8-bit images: use memory=lossless (memory.kind={ctx.memory.kind!r})")
        if ctx.task_train_set is None:
            raise ValueError("CondensedReplay condenses a finished task's training set: the learner must provide task_train_set")
        self.images_per_class = ctx.memory.items_for_bits(ctx.memory.store_budget())  # a class's share (>= 1: build checked)

    def store(self, batch: dict[str, torch.Tensor]) -> None:
        """Incoming examples are not kept: each class's memory is made once, at its task's end."""

    def after_task(self, task: int) -> None:
        data = self.ctx.task_train_set(task)
        classes = torch.tensor(sorted(self.ctx.task_classes[task]))
        x, y = self.select(data.images, data.labels.cpu(), classes, task)
        for c in classes.tolist():
            mine = y == c
            self.memory.set_store(c, x[mine], y[mine], task, capacity=self.images_per_class)

    def select(self, images: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``images_per_class`` images of each of the task's ``classes`` (uint8 ``images``) in [0, 1], with their labels."""
        m = self.images_per_class
        if self.selection == "condense":
            # learnt in the learner's own input space ([0, 1] pixels), not the reference's normalised one: stored
            # clamped to pixels and replayed to a learner that sees pixels (split MNIST, budget 50: 0.716 vs 0.462);
            # on the learner's device
            channels = images.shape[1]
            synthetic = self.condenser(images, labels, images_per_class=m, seed=self.seed + task,
                                       mean=(0.0,) * channels, std=(1.0,) * channels, device=next(self.net.parameters()).device)
            return synthetic.pixels(), synthetic.labels
        x = images.float() / 255
        local = torch.searchsorted(classes, labels)
        chosen = select_coreset(self.selection, local, m, len(classes), features=x.flatten(1),
                                generator=torch.Generator().manual_seed(self.seed + task))
        return x[chosen], labels[chosen]
