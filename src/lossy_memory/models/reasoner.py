"""The reasoning network: a classifier from the zoo (lossy_memory.nets) trained on labelled images."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lossy_memory.nets import Classifier


class Reasoner(L.LightningModule):
    """Cross-entropy training of ``classifier`` (a partial completed with ``image_shape`` and ``num_classes``).

    Logs ``train/loss``, ``train/accuracy``, and ``<split>/accuracy`` (micro accuracy, torchmetrics) for validation and
    for every test split the datamodule names (``test``, ``train`` with ``eval_on_train``, ``test_task<t>`` for
    streams). The checkpoint of a Reasoner is what the GenerativeDistiller loads as its teacher.
    """

    def __init__(
        self,
        classifier: Callable[..., Classifier],
        optimizer: Callable[..., torch.optim.Optimizer],
        image_shape: Sequence[int],
        num_classes: int,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
    ):
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)
        self.num_classes = int(num_classes)
        self.net = classifier(image_shape=self.image_shape, num_classes=self.num_classes)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.accuracy = nn.ModuleDict()  # "<split>_accuracy" -> metric, made when a split is first seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _metric_key(self, split: str) -> str:
        key = f"{split}_accuracy"  # a ModuleDict key may not shadow nn.Module.train
        if key not in self.accuracy:
            self.accuracy[key] = MulticlassAccuracy(self.num_classes, average="micro").to(self.device)
        return key

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch["x"])
        loss = F.cross_entropy(logits, batch["y"])
        accuracy = (logits.argmax(1) == batch["y"]).float().mean()
        self.log_dict({"train/loss": loss, "train/accuracy": accuracy}, on_step=True, on_epoch=True, batch_size=len(logits))
        return loss

    def evaluation_step(self, batch: dict, split: str) -> None:
        key = self._metric_key(split)
        metric = self.accuracy[key]
        metric.update(self(batch["x"]), batch["y"])
        # named explicitly: Lightning looks metric attributes up once, before a stream's later test splits made theirs
        self.log(f"{split}/accuracy", metric, on_epoch=True, prog_bar=True, batch_size=len(batch["x"]), add_dataloader_idx=False,
                 metric_attribute=f"accuracy.{key}")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.evaluation_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        datamodule = self.trainer.datamodule
        self.evaluation_step(batch, datamodule.test_splits[dataloader_idx] if datamodule else "test")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"}}
