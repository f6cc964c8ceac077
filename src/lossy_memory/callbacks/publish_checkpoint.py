"""Copies a run's final checkpoint to a stable path that other experiments read (a teacher, a generator + buffer).

Only a full run publishes: not one shortened by ``trainer=debug`` (``limit_train_batches``, ``max_steps``,
``fast_dev_run``), stopped before its last epoch, or interrupted (``checkpoints.shortened``: what a run loading the
artifact would refuse); such a run says why it did not publish (``force=true`` publishes anyway). Beside the artifact, ``<artifact>.json`` says where it came from: the run
directory, its task, git commit, when, and its figures at the end of fit (``lossy_memory.checkpoints`` reports them
when a run loads the artifact).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lossy_memory.checkpoints import provenance_path, shortened
from lossy_memory.runtime import git_state
from lossy_memory.writers import write_json


class PublishCheckpoint(L.Callback):
    """At the end of a full fit, copy the ModelCheckpoint's ``last.ckpt`` to ``path`` (atomically: a reader never sees
    half a file) with its provenance beside it (see the module docstring). ``force``: publish a shortened run too."""

    def __init__(self, path: str | os.PathLike, force: bool = False):
        self.path, self.force = Path(path), bool(force)

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
        reason = "interrupted" if trainer.interrupted else shortened(
            trainer.limit_train_batches, trainer.max_steps, trainer.fast_dev_run, trainer.current_epoch, trainer.max_epochs)
        if reason is not None and not self.force:
            rank_zero_warn(f"PublishCheckpoint: {self.path} left as it was: this run was shortened ({reason}), and only full "
                           "runs publish (callbacks.publish_checkpoint.force=true publishes it anyway)")
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        run_dir = Path(source).resolve().parent.parent
        provenance = {"source": str(Path(source).resolve()), "run_dir": str(run_dir),
                      "git": git_state(), "published": time.strftime("%Y-%m-%d %H:%M:%S"), "shortened": reason,
                      "epochs": trainer.current_epoch, "global_step": trainer.global_step,
                      "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}}
        for target, write in ((self.path, lambda p: shutil.copyfile(source, p)), (provenance_path(self.path), lambda p: write_json(p, provenance))):
            partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
            write(partial)
            os.replace(partial, target)
        rank_zero_info(f"PublishCheckpoint: {source} -> {self.path}")
