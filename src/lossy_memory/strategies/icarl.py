"""iCaRL (Rebuffi et al., 2017): exemplar sets chosen by herding, distillation, nearest-mean-of-exemplars prediction.

Training: each incoming batch, together with a mini-batch of exemplars (drawn before the N updates), trains the
network with binary cross-entropy over the classes seen so far; for classes of earlier tasks the targets are the
sigmoid outputs of the network as it was at the end of the previous task (distillation). At the end of task t
the exemplar sets are rebuilt for a fixed budget: m = the items the memory's bits hold divided by the classes seen;
earlier sets keep their first m items (herding order), and each new class gets its m examples chosen by herding on
the network's normalised ``embed`` features (the running mean of the chosen ones closest to the class mean).
Prediction: the class whose exemplar mean (normalised features) is nearest. Exemplars are lossless images or
recollections (the memory's kind); one memory store per class. Needs disjoint classes across tasks.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from lossy_memory.memory.coresets import herding
from lossy_memory.memory.replay import evaluating
from lossy_memory.strategies.base import ContinualStrategy, StrategyContext, check_count


class ICaRL(ContinualStrategy):
    uses_memory = True
    needs_disjoint_classes = True
    memory_layout = "per_class"  # one exemplar set per class, made at each task's end

    def __init__(self, steps: int = 1, replay_size: int | None = None, feature_batch_size: int = 1000):
        super().__init__(steps)
        self.replay_size = None if replay_size is None else check_count(replay_size, "strategy.replay_size")
        self.feature_batch_size = check_count(feature_batch_size, "strategy.feature_batch_size")
        self.old_net: torch.nn.Module | None = None
        self.class_means: torch.Tensor | None = None  # [num_classes, d], NaN rows for classes without exemplars

    def setup(self, ctx: StrategyContext) -> None:
        super().setup(ctx)
        if ctx.memory.kind == "mixed":
            raise ValueError("iCaRL keeps exemplar sets in herding order: use memory.kind=lossless or recollection, not mixed")
        if ctx.task_train_set is None:
            raise ValueError("iCaRL chooses exemplars from a finished task's training set: the learner must provide task_train_set")
        if not hasattr(ctx.net, "embed"):
            raise ValueError("iCaRL needs a classifier with embed() features (lossy_memory.nets.Classifier)")

    def seen_classes(self, upto: int) -> list[int]:
        return sorted({c for classes in self.ctx.task_classes[: upto + 1] for c in classes})

    def observe(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = batch["x"], batch["y"]
        n = self.replay_size or len(x)
        draws = self.memory.sample_batches(self.steps, n, x.device) if len(self.memory) else []
        seen = torch.tensor(self.seen_classes(self.task), device=x.device)
        old = torch.tensor(self.seen_classes(self.task - 1) if self.task > 0 else [], dtype=torch.long, device=x.device)
        for step in range(self.steps):
            xs, ys = (torch.cat([x, draws[step].x]), torch.cat([y, draws[step].y])) if draws else (x, y)
            targets = F.one_hot(ys, self.ctx.num_classes).float()
            if self.old_net is not None and len(old):
                with torch.no_grad():
                    targets[:, old] = torch.sigmoid(self.old_net(xs)[:, old])
            loss = F.binary_cross_entropy_with_logits(self.net(xs)[:, seen], targets[:, seen])
            self.update(loss)
        return {"loss": loss.detach()}

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        with evaluating(self.net):
            return torch.cat([F.normalize(self.net.embed(chunk), dim=1) for chunk in x.split(self.feature_batch_size)])

    def after_task(self, task: int) -> None:
        device = next(self.net.parameters()).device
        seen = self.seen_classes(task)
        m = self.memory.items_for_bits(self.memory.budget_bits / len(seen))
        for c in self.seen_classes(task - 1) if task > 0 else []:
            if c in self.memory.stores:
                self.memory.truncate_store(c, m)
        data = self.ctx.task_train_set(task)
        for c in self.ctx.task_classes[task]:
            images = data.images[data.labels == c]
            if not len(images):
                continue
            x = images.to(device).float() / 255
            chosen = herding(self.features(x), m).to(device)
            self.memory.set_store(c, x[chosen], torch.full((len(chosen),), c), task, capacity=m)
        self.old_net = copy.deepcopy(self.net).eval().requires_grad_(False)
        self.update_means(device)

    def update_means(self, device: torch.device) -> None:
        means = None
        for c, store in self.memory.stores.items():
            if not len(store):
                continue
            x, _, _ = self.memory.contents(key=c, device=device)
            mean = F.normalize(self.features(x).mean(0), dim=0)
            if means is None:
                means = torch.full((self.ctx.num_classes, len(mean)), float("nan"), device=device)
            means[c] = mean
        self.class_means = means

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Negative distance to each class's exemplar mean (-inf for classes without exemplars); logits before any task ends."""
        if self.class_means is None:
            return self.net(x)
        distances = torch.cdist(self.features(x), self.class_means.to(x.device))
        return (-distances).nan_to_num(nan=float("-inf"))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "class_means": self.class_means,
                "old_net": None if self.old_net is None else self.old_net.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.class_means = state["class_means"]
        if state["old_net"] is not None:
            self.old_net = copy.deepcopy(self.net).eval().requires_grad_(False)
            self.old_net.load_state_dict(state["old_net"])
