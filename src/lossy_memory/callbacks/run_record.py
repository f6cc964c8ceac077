"""Keeps with every run what is needed to trust and repeat it: the resolved config and the code version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from lossy_memory.runtime import git_state


class RunRecord(L.Callback):
    """Writes ``config.yaml`` (resolved) and ``run.json`` (git SHA, world size, storage) to the run directory,
    and stores the resolved config inside every checkpoint so ``lossy_memory.evaluate`` can rebuild the run."""

    def __init__(self, config: dict[str, Any], output_dir: str | Path):
        self.config, self.output_dir = config, Path(output_dir)

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Also here, not only at train start: a run resumed from a finished checkpoint never starts training.
        self.write(trainer, pl_module)

    @rank_zero_only
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Again now that the train loader, and so the number of batches per rank, is set up.
        self.write(trainer, pl_module, train_batches_per_rank=trainer.num_training_batches)

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, **extra: Any) -> None:
        import yaml

        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "config.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False))
        record = {"git": git_state(), "world_size": trainer.world_size, **extra}
        if hasattr(pl_module, "storage_report"):
            record["storage"] = pl_module.storage_report()
        (self.output_dir / "run.json").write_text(json.dumps(record, indent=2))

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint["run_config"] = self.config
