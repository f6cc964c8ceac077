"""Image grids of originals above their reconstructions, saved as PNG and sent to image-capable loggers."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image


class ReconstructionGrid(L.Callback):
    """After each validation epoch: the first ``num_images`` validation images and their reconstructions
    from stored codes, as ``<run>/images/reconstructions_epoch<k>.png`` and in W&B / TensorBoard."""

    def __init__(self, output_dir: str | Path, num_images: int = 32):
        self.output_dir, self.num_images = Path(output_dir) / "images", num_images

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not hasattr(pl_module, "reconstruct"):
            return
        dataset = trainer.datamodule.val_set
        x = trainer.datamodule.on_after_batch_transfer(dataset[torch.arange(min(self.num_images, len(dataset)))], 0)["x"]
        with torch.no_grad():
            x_hat = pl_module.reconstruct(x.to(pl_module.device)).cpu()
        grid = make_grid(torch.cat([x, x_hat]), nrow=len(x), padding=1)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        save_image(grid, self.output_dir / f"reconstructions_epoch{trainer.current_epoch}.png")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("val/reconstructions", [grid], step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/reconstructions", grid, trainer.global_step)
