"""LightningDataModules over torchvision datasets, and task streams for continual learning."""

from lossy_memory.data.batching import ImageTensorDataset, batch_loader
from lossy_memory.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from lossy_memory.data.errors import DatasetCorruptError, DatasetUnavailableError
from lossy_memory.data.image_datamodule import ImageDataModule
from lossy_memory.data.mnist import MNISTDataModule
from lossy_memory.data.omniglot import OmniglotDataModule
from lossy_memory.data.streams import (
    CIFAR100Stream,
    ClassSplitStream,
    LongTermRetentionStream,
    OmniglotStream,
    PermutedMNISTStream,
    RotatedMNISTStream,
    SplitMNISTStream,
    StreamData,
    TaskOrderBatchSampler,
    TaskStreamDataModule,
    TransformedMNISTStream,
)

__all__ = [
    "CIFAR100DataModule",
    "CIFAR100Stream",
    "CIFAR10DataModule",
    "ClassSplitStream",
    "DatasetCorruptError",
    "DatasetUnavailableError",
    "ImageDataModule",
    "ImageTensorDataset",
    "LongTermRetentionStream",
    "MNISTDataModule",
    "OmniglotDataModule",
    "OmniglotStream",
    "PermutedMNISTStream",
    "RotatedMNISTStream",
    "SplitMNISTStream",
    "StreamData",
    "TaskOrderBatchSampler",
    "TaskStreamDataModule",
    "TransformedMNISTStream",
    "batch_loader",
]
