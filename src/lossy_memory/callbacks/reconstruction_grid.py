"""Image grids of originals above their reconstructions, saved as labelled PNG and sent to image-capable loggers."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid


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
        what = describe(pl_module)
        save_labelled(grid, self.output_dir / f"reconstructions_epoch{trainer.current_epoch}.png", x.shape[-2], ["original", "reconstruction"],
                      f"validation images, epoch {trainer.current_epoch}{': ' + what if what else ''}")
        caption = f"top row: originals; bottom row: reconstructions{' (' + what + ')' if what else ''}"
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("val/reconstructions", [grid], step=trainer.global_step, caption=[caption])
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/reconstructions", grid, trainer.global_step)
                logger.experiment.add_text("val/reconstructions_caption", caption, trainer.global_step)


def describe(pl_module: L.LightningModule) -> str:
    """What the reconstructions are made of: the latent and its bits per image, when the module says."""
    latent = getattr(pl_module, "latent", None)
    if latent is None or not hasattr(latent, "bits_per_item"):
        return ""
    sizes = f"c={latent.c}, l={latent.l}, " if hasattr(latent, "l") else ""
    return f"{sizes}{latent.bits_per_item} bits per image"


def save_labelled(grid: torch.Tensor, path: Path, row_height: int, names: list[str], title: str) -> None:
    """The grid (rows of ``row_height`` pixels, 1 pixel apart) as a PNG with its rows named (Agg canvas: no GUI backend)."""
    from matplotlib.figure import Figure

    height, width = grid.shape[1:]
    figure = Figure(figsize=(max(4.0, width / 60), max(1.6, height / 60 + 0.8)), layout="constrained")
    axes = figure.subplots()
    axes.imshow(grid.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    axes.set_yticks([1 + (row_height + 1) * k + row_height / 2 for k in range(len(names))], names, fontsize=8)
    axes.set_xticks([])
    axes.set_title(title, fontsize=8)
    figure.savefig(path, dpi=100)
