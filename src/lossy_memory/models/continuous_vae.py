"""The continuous-latent baseline: h Gaussian variables stored as float32 (32*h bits per item)."""

from __future__ import annotations

from lossy_memory.models.autoencoder import LatentAutoencoder
from lossy_memory.nets.latents import GaussianLatent


class ContinuousVAE(LatentAutoencoder):
    def __init__(self, latent: GaussianLatent, *args, **kwargs):
        if not isinstance(latent, GaussianLatent):
            raise TypeError(f"ContinuousVAE needs a GaussianLatent, got {type(latent).__name__}")
        super().__init__(latent, *args, **kwargs)
