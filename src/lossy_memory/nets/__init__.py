"""Plain nn.Modules, free of Lightning: architectures any code can reuse."""

from lossy_memory.nets.autoencoders import ConvDecoder, ConvEncoder
from lossy_memory.nets.latents import CategoricalLatent, GaussianLatent

__all__ = ["CategoricalLatent", "ConvDecoder", "ConvEncoder", "GaussianLatent"]
