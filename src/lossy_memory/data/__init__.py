"""LightningDataModules over torchvision datasets, and task streams for continual learning."""

from lossy_memory.data.batching import ImageTensorDataset, batch_loader
from lossy_memory.data.errors import DatasetCorruptError, DatasetUnavailableError
from lossy_memory.data.image_datamodule import ImageDataModule
from lossy_memory.data.mnist import MNISTDataModule

__all__ = [
    "DatasetCorruptError",
    "DatasetUnavailableError",
    "ImageDataModule",
    "ImageTensorDataset",
    "MNISTDataModule",
    "batch_loader",
]
