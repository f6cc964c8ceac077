"""Copies a run's final checkpoint to a stable path that other experiments read (a teacher, a generator + buffer)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info


class PublishCheckpoint(L.Callback):
    """At the end of fit, copy the ModelCheckpoint's ``last.ckpt`` to ``path`` (atomically: a reader never sees half a file).

    The run directory keeps its own checkpoints; ``path`` always holds the latest finished run's, so that e.g.
    ``+experiment=mnist_distill`` finds the teacher that ``+experiment=mnist_teacher`` trained last.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and not any(isinstance(c, ModelCheckpoint) and c.save_last for c in trainer.callbacks):
            raise ValueError("PublishCheckpoint copies the last checkpoint: add a ModelCheckpoint with save_last=true "
                             "(the default callbacks have one)")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        source = next(c.last_model_path for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.save_last)
        if not source or not Path(source).is_file():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        shutil.copyfile(source, partial)
        os.replace(partial, self.path)
        rank_zero_info(f"PublishCheckpoint: {source} -> {self.path}")
