"""A latent-variable autoencoder trained as a VAE: the shared base of DiscreteVAE and ContinuousVAE."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanAbsoluteError

RECONSTRUCTION_LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss}


class LatentAutoencoder(L.LightningModule):
    """encoder -> latent bottleneck -> decoder, loss = reconstruction error (pixels in [0,1], summed per image)
    + kl_weight * KL(q(z|x) || prior).

    ``reconstruction_loss`` is ``"l1"`` (the paper's, default) or ``"mse"``. A weak decoder trained with L1 predicts
    each pixel's conditional median, which is black wherever a stroke is present less than half the time: a fully
    connected generator learning online on permuted MNIST stays all-black under L1, while MSE's conditional mean
    keeps the strokes' faint traces (README, continual results).

    ``encoder`` and ``decoder`` are partials completed here with the sizes only this module knows
    (``net/`` configs carry ``_partial_: true``). Evaluation reconstructs from the deterministic codes
    that would be stored (``encode`` then ``decode``), and reports distortion: the mean absolute difference
    per pixel on the [0,1] scale (paper, Appendix A.1).
    """

    def __init__(
        self,
        latent: nn.Module,
        encoder: Callable[..., nn.Module],
        decoder: Callable[..., nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        image_shape: Sequence[int],
        kl_weight: float = 1.0,
        hidden: int | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        reconstruction_loss: str = "l1",
    ):
        super().__init__()
        if len(image_shape) != 3:
            raise ValueError(f"model.image_shape must be [channels, height, width], got {list(image_shape)}")
        if kl_weight < 0:
            raise ValueError(f"model.kl_weight must be >= 0, got {kl_weight}")
        if reconstruction_loss not in RECONSTRUCTION_LOSSES:
            raise ValueError(f"model.reconstruction_loss must be one of {sorted(RECONSTRUCTION_LOSSES)}, got {reconstruction_loss!r}")
        self.reconstruction_loss_name = reconstruction_loss
        self.image_shape = tuple(int(s) for s in image_shape)
        self.latent = latent
        self.hidden = hidden or self.default_hidden()  # filters per layer
        self.encoder = encoder(image_shape=self.image_shape, out_features=latent.num_inputs, hidden=self.hidden)
        self.decoder = decoder(in_features=latent.num_outputs, image_shape=self.image_shape, hidden=self.hidden)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.kl_weight = kl_weight
        # Keyed "<split>_distortion": a ModuleDict key may not shadow nn.Module.train.
        self.distortion = nn.ModuleDict({f"{split}_distortion": MeanAbsoluteError() for split in ("val", "test", "train")})

    def default_hidden(self) -> int:
        return 64

    # -- the storage interface ----------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """What is stored for each image."""
        return self.latent.codes(self.encoder(x))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Images in [0,1] from stored codes."""
        return self.decoder(self.latent.embed(codes)).clamp(0, 1)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def storage_report(self) -> dict[str, float]:
        bits = self.latent.bits_per_item
        input_bits = 8 * int(torch.tensor(self.image_shape).prod())
        parameter_bits = 32 * sum(p.numel() for p in self.parameters())
        return {"bits_per_item": bits, "compression_ratio": input_bits / bits, "parameter_bits": parameter_bits}

    # -- training -----------------------------------------------------------------------------------
    def reconstruction_error(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The configured reconstruction error of each image, summed over its pixels: a [N] tensor."""
        return RECONSTRUCTION_LOSSES[self.reconstruction_loss_name](x_hat, x, reduction="none").flatten(1).sum(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, kl = self.latent(self.encoder(x), step=self.global_step)
        return self.decoder(z), kl

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x = batch["x"]
        x_hat, kl = self(x)
        reconstruction = self.reconstruction_error(x_hat, x).mean()
        kl = kl.mean()
        loss = reconstruction + self.kl_weight * kl
        self.log_dict(
            {"train/loss": loss, "train/reconstruction": reconstruction, "train/kl": kl,
             "train/sample_distortion": (x_hat.detach().clamp(0, 1) - x).abs().mean()},
            on_step=True, on_epoch=True, prog_bar=False, batch_size=len(x),
        )
        return loss

    def evaluation_step(self, batch: dict, split: str) -> None:
        x = batch["x"]
        metric = self.distortion[f"{split}_distortion"]
        metric.update(self.reconstruct(x), x)
        self.log(f"{split}/distortion", metric, on_epoch=True, prog_bar=True, batch_size=len(x), add_dataloader_idx=False)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.evaluation_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.evaluation_step(batch, self.trainer.datamodule.test_splits[dataloader_idx] if self.trainer.datamodule else "test")

    def on_fit_start(self) -> None:
        self.log_storage()

    def on_test_start(self) -> None:
        self.log_storage()

    def log_storage(self) -> None:
        for logger in self.loggers:
            logger.log_metrics({f"storage/{k}": float(v) for k, v in self.storage_report().items()}, step=self.global_step)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"}}
