"""MNIST from the original idx files (torchvision layout)."""

from __future__ import annotations

import torch
from torchvision.datasets import MNIST

from lossy_memory.data.image_datamodule import ImageDataModule


class MNISTDataModule(ImageDataModule):
    name = "MNIST"
    num_classes = 10
    layout = (
        "  MNIST/raw/train-images-idx3-ubyte\n  MNIST/raw/train-labels-idx1-ubyte\n"
        "  MNIST/raw/t10k-images-idx3-ubyte\n  MNIST/raw/t10k-labels-idx1-ubyte\n"
        "(uncompressed idx files, as torchvision.datasets.MNIST writes them)"
    )

    @property
    def folder(self):
        return self.data_dir / "MNIST" / "raw"

    def files_present(self) -> bool:
        return all((self.folder / url.rsplit("/", 1)[-1].removesuffix(".gz")).is_file() for url, _ in MNIST.resources)

    def download_files(self) -> None:
        MNIST(self.data_dir, train=True, download=True)

    def read_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = MNIST(self.data_dir, train=train, download=False)
        if len(dataset.data) != len(dataset.targets):
            raise ValueError(f"{len(dataset.data)} images but {len(dataset.targets)} labels")
        return dataset.data.unsqueeze(1), dataset.targets
