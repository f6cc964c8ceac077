"""LightningModules: what is trained, and how."""

from lossy_memory.models.autoencoder import LatentAutoencoder
from lossy_memory.models.continuous_vae import ContinuousVAE
from lossy_memory.models.discrete_vae import DiscreteVAE

__all__ = ["ContinuousVAE", "DiscreteVAE", "LatentAutoencoder"]
