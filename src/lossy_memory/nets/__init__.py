"""Plain nn.Modules, free of Lightning: architectures any code can reuse."""

from lossy_memory.nets.autoencoders import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from lossy_memory.nets.classifiers import MLP, AlexNet, Classifier, ConvNet, LeNet5, ResNet18, VGG11
from lossy_memory.nets.latents import CategoricalLatent, GaussianLatent

__all__ = ["MLP", "VGG11", "AlexNet", "CategoricalLatent", "Classifier", "ConvDecoder", "ConvEncoder", "ConvNet",
           "GaussianLatent", "LeNet5", "MLPDecoder", "MLPEncoder", "ResNet18"]
