"""What a continual learner's memory replays of each task, as an image grid at every task boundary."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image


class RecollectionGrid(L.Callback):
    """After each task of a continual run with a memory: up to ``per_task`` items the memory holds of every task seen
    so far, one row per task, decoded as replay decodes them (recollections; the stored images themselves for a
    lossless memory). Saved as ``<run>/images/recollections_after_task<k>.png`` (row j: task j) and sent to W&B / TensorBoard as
    ``cl/recollections``: how the old tasks' recollections drift as the generator learns new ones. Other runs: nothing."""

    def __init__(self, output_dir: str | Path, per_task: int = 16):
        if per_task < 1:
            raise ValueError(f"callbacks.recollection_grid.per_task must be >= 1, got {per_task}")
        self.output_dir, self.per_task = Path(output_dir) / "images", per_task
        self.drawn = 0  # task boundaries drawn so far

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        self.draw_new_boundaries(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.draw_new_boundaries(trainer, pl_module)  # the last task ends with the epoch, after the last batch

    def draw_new_boundaries(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        evaluator, memory = getattr(pl_module, "evaluator", None), getattr(pl_module, "memory", None)
        if evaluator is None or memory is None or evaluator.tasks_done <= self.drawn:
            return
        self.drawn = evaluator.tasks_done
        self.draw(trainer, pl_module, self.drawn - 1)

    @rank_zero_only
    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, task: int) -> None:
        memory = pl_module.memory
        rows = []
        with torch.no_grad():
            for seen in range(task + 1):
                x = memory.contents(seen, limit=self.per_task)[0][: self.per_task].float().cpu()
                rows.append(torch.cat([x, x.new_zeros(self.per_task - len(x), *x.shape[1:])]))  # a short row padded black
        grid = make_grid(torch.cat(rows), nrow=self.per_task, padding=1)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        kind = f"{memory.kind} memory"
        # the bare grid (row k: task k): a labelled matplotlib figure costs 4x as much, paid at every boundary of the stream
        save_image(grid, self.output_dir / f"recollections_after_task{task}.png")
        caption = f"row k: task k's items as replayed ({kind}), after training task {task}"
        step = getattr(pl_module, "stream_position", trainer.global_step)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("cl/recollections", [grid], step=step, caption=[caption])
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("cl/recollections", grid, step)
