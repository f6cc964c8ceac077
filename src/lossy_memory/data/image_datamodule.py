"""The shared LightningDataModule: whole datasets as uint8 tensors, batched gathers, float conversion on device."""

from __future__ import annotations

import shutil
from abc import abstractmethod
from pathlib import Path

import lightning as L
import torch

from lossy_memory.data.batching import ImageTensorDataset, batch_loader, to_float_batch
from lossy_memory.data.errors import DatasetCorruptError, DatasetUnavailableError


def _describe(error: BaseException) -> str:
    """One line per exception in the chain: torchvision wraps the network error (the useful part) in a RuntimeError."""
    lines = []
    while error is not None and len(lines) < 4:
        lines.append(" ".join(f"{type(error).__name__}: {error}".split()))
        error = error.__cause__ or error.__context__
    return " <- ".join(lines)


def _topmost_missing(folder: Path) -> Path | None:
    """The outermost folder on the way to ``folder`` that does not exist yet (None when ``folder`` exists)."""
    missing = None
    for path in (folder, *folder.parents):
        if path.exists():
            return missing
        missing = path
    return missing


class ImageDataModule(L.LightningDataModule):
    """Loads a train and a test split once into memory and serves batches of ``{"x", "y"}``.

    Subclasses say where the files are (``files_present``), how to fetch them (``download_files``) and how
    to read one split into uint8 images [N, C, H, W] and labels (``read_split``). Everything else (missing and
    damaged files, validation hold-out, DDP sharding, float conversion) lives here once.

    ``image_shape`` is the [C, H, W] the data is served at and ``num_classes`` the number of classes; models read
    both from the same config values, and a mismatch with the files is an error at setup. ``val_size`` examples are held out of the training split for validation (seeded); with 0, validation
    reads the test split (monitoring only: no checkpoint is chosen by it). With ``eval_on_train`` the test
    stage also reports on the training split (``test_splits`` names them), as the paper's distortion tables do.
    """

    name: str = "dataset"
    layout: str = ""
    num_classes: int = 0

    def __init__(
        self,
        data_dir: str | Path,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_size: int = 0,
        download: bool = True,
        seed: int = 0,
        eval_on_train: bool = False,
        image_shape: tuple[int, int, int] | None = None,
        num_classes: int | None = None,
    ):
        super().__init__()
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError(f"data.batch_size and data.eval_batch_size must be >= 1, got {batch_size} and {eval_batch_size}")
        if val_size < 0:
            raise ValueError(f"data.val_size must be >= 0, got {val_size}")
        self.data_dir = Path(data_dir).expanduser()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.download, self.seed, self.eval_on_train = val_size, download, seed, eval_on_train
        self.expected_shape = None if image_shape is None else tuple(int(s) for s in image_shape)
        self.expected_classes = None if num_classes is None else int(num_classes)
        self.train_set: ImageTensorDataset | None = None
        self.val_set: ImageTensorDataset | None = None
        self.test_set: ImageTensorDataset | None = None

    # -- what a dataset must say -------------------------------------------------------------------
    @property
    def folder(self) -> Path:
        """The folder searched for this dataset's files (named in errors)."""
        return self.data_dir

    @abstractmethod
    def files_present(self) -> bool: ...

    @abstractmethod
    def download_files(self) -> None: ...

    @abstractmethod
    def read_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]: ...

    # -- shared machinery ----------------------------------------------------------------------------
    def check_available(self) -> None:
        """Raise a DatasetUnavailableError unless the files are present (downloading them when allowed)."""
        if self.files_present():
            return
        reason = None if self.download else "data.download=false"
        if self.download:
            # what a download makes (folders, a partial archive beside them) is removed again if it fails
            created = [p for p in (_topmost_missing(self.data_dir), _topmost_missing(self.folder)) if p is not None]
            before = set(self.data_dir.iterdir()) if self.data_dir.is_dir() else set()
            try:
                self.download_files()
            except Exception as error:  # torchvision raises URLError, RuntimeError, OSError... depending on the mirror
                reason = _describe(error)
            if self.files_present():
                return
            if self.data_dir.is_dir():
                created += sorted(set(self.data_dir.iterdir()) - before)
            for path in created:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        raise DatasetUnavailableError(self.name, self.folder, self.layout, reason, self.unavailable_advice())

    def unavailable_advice(self) -> str | None:
        """A line for the missing-data error beyond the layout (what is there instead, another configuration)."""
        return None

    def prepare_data(self) -> None:
        self.check_available()

    def load_split(self, train: bool) -> ImageTensorDataset:
        try:
            images, labels = self.read_split(train)
            dataset = ImageTensorDataset(images, labels)
        except (DatasetUnavailableError, DatasetCorruptError):
            raise
        except Exception as error:
            raise DatasetCorruptError(self.name, self.folder, f"{type(error).__name__}: {error}") from error
        if len(dataset) == 0:
            raise DatasetCorruptError(self.name, self.folder, f"the {'train' if train else 'test'} split is empty")
        if self.expected_shape is not None and dataset.image_shape != self.expected_shape:
            raise ValueError(
                f"{self.name} images have shape {list(dataset.image_shape)} but data.image_shape is {list(self.expected_shape)}: "
                f"set data.image_shape to {list(dataset.image_shape)} (models read their input shape from it)"
            )
        return dataset

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.check_available()
        train, self.test_set = self.load_split(train=True), self.load_split(train=False)
        if self.expected_classes is not None and self.expected_classes != self.num_classes:
            raise ValueError(f"{self.name} in {self.folder} has {self.num_classes} classes but data.num_classes is "
                             f"{self.expected_classes}: set data.num_classes={self.num_classes} (classifiers are sized by it)")
        if self.val_size >= len(train):
            raise ValueError(f"data.val_size={self.val_size} leaves no training examples (the split has {len(train)})")
        if self.val_size:
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed))
            self.val_set, self.train_set = train.subset(order[: self.val_size]), train.subset(order[self.val_size :])
        else:
            self.train_set, self.val_set = train, self.test_set

    @property
    def image_shape(self) -> tuple[int, int, int]:
        self.setup()
        return self.train_set.image_shape

    @property
    def test_splits(self) -> list[str]:
        return ["test", "train"] if self.eval_on_train else ["test"]

    def _replicas(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_dataloader(self):
        num_replicas, rank = self._replicas()
        return batch_loader(self.train_set, self.batch_size, shuffle=True, drop_last=False, seed=self.seed, num_replicas=num_replicas, rank=rank)

    def _eval_loader(self, dataset: ImageTensorDataset):
        num_replicas, rank = self._replicas()
        return batch_loader(dataset, self.eval_batch_size, shuffle=False, num_replicas=num_replicas, rank=rank)

    def val_dataloader(self):
        return self._eval_loader(self.val_set)

    def test_dataloader(self):
        loaders = [self._eval_loader(self.test_set)]
        if self.eval_on_train:
            loaders.append(self._eval_loader(self.train_set))
        return loaders

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        return to_float_batch(batch)
