"""Keeps with every run what is needed to trust and repeat it: the resolved config and the code version."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from lossy_memory.runtime import git_state
from lossy_memory.writers import write_json


class RunRecord(L.Callback):
    """Writes ``config.yaml`` (resolved) and ``run.json`` (git SHA, world size, storage; in a multirun job, ``swept``:
    the settings its sweep gave it) to the run directory,
    and stores the resolved config inside every checkpoint so ``lossy_memory.evaluate`` can rebuild the run."""

    def __init__(self, config: dict[str, Any], output_dir: str | Path, swept: dict[str, str] | None = None):
        self.config, self.output_dir = config, Path(output_dir)
        self.extra: dict[str, Any] = {"swept": swept} if swept else {}

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Also here, not only at train start: a run resumed from a finished checkpoint never starts training.
        self.write(trainer, pl_module)

    @rank_zero_only
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Again now that the train loader, and so the number of batches per rank, is set up.
        self.extra["train_batches_per_rank"] = trainer.num_training_batches
        self.write(trainer, pl_module)

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Last: the storage report as the run ends (what it stores then, as its results files say).
        self.write(trainer, pl_module)

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import yaml

        self.output_dir.mkdir(parents=True, exist_ok=True)
        if "started" not in self.extra:  # the first write of the run: the config does not change after it
            (self.output_dir / "config.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.extra.setdefault("started", time.time())
        record = {"git": git_state(), "world_size": trainer.world_size, "torch_threads": torch.get_num_threads(), **self.extra}
        if hasattr(pl_module, "storage_report"):
            record["storage"] = pl_module.storage_report()
        write_json(self.output_dir / "run.json", record)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint["run_config"] = self.config
