"""CIFAR-10 and CIFAR-100 from the python pickles (torchvision layout), CIFAR-100 with fine or coarse labels."""

from __future__ import annotations

import os
import pickle
from typing import Literal

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100

from lossy_memory.data.image_datamodule import ImageDataModule


class _CIFAR10Files(CIFAR10):
    """torchvision's CIFAR-10 reader with the per-file md5s dropped.

    torchvision md5-checks every pickle (``check_integrity(path, None)`` only tests that the file exists), so
    any other copy of the files, such as the tiny ones the tests write, would be reported missing. Presence is
    checked by file; damage shows up when the pickles are read. The downloaded archive keeps its md5 check.
    """

    train_list = [[name, None] for name, _ in CIFAR10.train_list]
    test_list = [[name, None] for name, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}


class _CIFAR100Files(CIFAR100):
    """torchvision's CIFAR-100 reader, presence-checked like ``_CIFAR10Files``, that also keeps the coarse labels.

    torchvision reads only ``fine_labels``; the 20 super-class labels sit in the same pickles as ``coarse_labels``.
    """

    train_list = [[name, None] for name, _ in CIFAR100.train_list]
    test_list = [[name, None] for name, _ in CIFAR100.test_list]
    meta = {**CIFAR100.meta, "md5": None}

    def __init__(self, root: str | os.PathLike, train: bool = True, download: bool = False):
        super().__init__(root, train=train, download=download)
        self.coarse_targets: list[int] = []
        for file_name, _ in self.train_list if train else self.test_list:
            with open(os.path.join(self.root, self.base_folder, file_name), "rb") as f:
                self.coarse_targets.extend(pickle.load(f, encoding="latin1")["coarse_labels"])


def _labels(labels: list[int], count: int, num_classes: int) -> torch.Tensor:
    """A pickle's label list as int64, checked against the image count and the class range (garbled files fail here)."""
    targets = torch.as_tensor(labels, dtype=torch.long)
    if targets.shape != (count,):
        raise ValueError(f"{count} images but {len(targets)} labels")
    if count and (targets.min() < 0 or targets.max() >= num_classes):
        raise ValueError(f"labels outside [0, {num_classes}): min {int(targets.min())}, max {int(targets.max())}")
    return targets


def _images(data: np.ndarray) -> torch.Tensor:
    """torchvision's HWC uint8 array -> uint8 [N, 3, 32, 32]."""
    if data.dtype != np.uint8:
        raise ValueError(f"images have dtype {data.dtype}, expected uint8")
    return torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2)))


class CIFAR10DataModule(ImageDataModule):
    name = "CIFAR-10"
    num_classes = 10
    layout = (
        "  cifar-10-batches-py/data_batch_1 ... data_batch_5\n  cifar-10-batches-py/test_batch\n"
        "  cifar-10-batches-py/batches.meta\n(the python pickles, as torchvision.datasets.CIFAR10 extracts them)"
    )
    reader = _CIFAR10Files

    @property
    def folder(self):
        return self.data_dir / self.reader.base_folder

    def files_present(self) -> bool:
        names = [name for name, _ in self.reader.train_list + self.reader.test_list] + [self.reader.meta["filename"]]
        return all((self.folder / name).is_file() for name in names)

    def download_files(self) -> None:
        self.reader(self.data_dir, train=True, download=True)

    def read_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = self.reader(self.data_dir, train=train, download=False)
        images = _images(dataset.data)
        return images, _labels(dataset.targets, len(images), self.num_classes)


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100 labelled by its 100 fine classes or its 20 coarse super-classes (``label_type``).

    Reading a split also records ``fine_to_coarse`` (fine class -> super-class, -1 where a fine class was not
    seen), which the super-class task stream needs whatever ``label_type`` says.
    """

    name = "CIFAR-100"
    layout = (
        "  cifar-100-python/train\n  cifar-100-python/test\n  cifar-100-python/meta\n"
        "(the python pickles with fine_labels and coarse_labels, as torchvision.datasets.CIFAR100 extracts them)"
    )
    reader = _CIFAR100Files
    num_fine, num_coarse = 100, 20

    def __init__(self, *args, label_type: Literal["fine", "coarse"] = "fine", **kwargs):
        super().__init__(*args, **kwargs)
        if label_type not in ("fine", "coarse"):
            raise ValueError(f"data.label_type must be 'fine' or 'coarse', got {label_type!r}")
        self.label_type = label_type
        self.num_classes = self.num_fine if label_type == "fine" else self.num_coarse
        self.fine_to_coarse = torch.full((self.num_fine,), -1, dtype=torch.long)

    def read_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = self.reader(self.data_dir, train=train, download=False)
        images = _images(dataset.data)
        fine = _labels(dataset.targets, len(images), self.num_fine)
        coarse = _labels(dataset.coarse_targets, len(images), self.num_coarse)
        self._record_super_classes(fine, coarse)
        return images, fine if self.label_type == "fine" else coarse

    def _record_super_classes(self, fine: torch.Tensor, coarse: torch.Tensor) -> None:
        """Each fine class belongs to exactly one super-class; anything else means the labels are garbled."""
        mapping = self.fine_to_coarse.clone()
        mapping[fine] = coarse  # one of the conflicting values wins; the check below catches any conflict
        known = self.fine_to_coarse >= 0
        if not torch.equal(mapping[fine], coarse) or not torch.equal(mapping[known], self.fine_to_coarse[known]):
            raise ValueError("coarse_labels disagree with fine_labels: some fine class has two super-classes")
        self.fine_to_coarse = mapping
