"""LightningModules: what is trained, and how."""

from lossy_memory.models.autoencoder import LatentAutoencoder
from lossy_memory.models.continual_learner import ContinualLearner
from lossy_memory.models.continuous_vae import ContinuousVAE
from lossy_memory.models.discrete_vae import DiscreteVAE
from lossy_memory.models.generative_distiller import GenerativeDistiller
from lossy_memory.models.gradient_matching import GradientMatchingCondenser
from lossy_memory.models.reasoner import Reasoner
from lossy_memory.models.unrolled_distiller import UnrolledDatasetDistiller

__all__ = [
    "ContinualLearner", "ContinuousVAE", "DiscreteVAE", "GenerativeDistiller", "GradientMatchingCondenser",
    "LatentAutoencoder", "Reasoner", "UnrolledDatasetDistiller",
]
