"""Images kept as uint8 tensors in memory and fetched a whole batch per index operation.

A DataLoader normally calls ``dataset[i]`` once per example and collates; here the batch sampler hands the
dataset a list of indices and ``__getitems__`` answers with one tensor gather, so loading costs microseconds
per batch and never bounds training. Float conversion and augmentation happen per batch, on the device,
in ``ImageDataModule.on_after_batch_transfer``.
"""

from __future__ import annotations

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, SequentialSampler
from torchvision.transforms import v2

_TO_FLOAT = v2.ToDtype(torch.float32, scale=True)


class ImageTensorDataset(Dataset):
    """uint8 images [N, C, H, W] with int64 labels and, for task streams, task ids. Items are dicts."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, tasks: torch.Tensor | None = None):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a uint8 tensor [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (len(images),):
            raise ValueError(f"labels must have shape ({len(images)},), got {tuple(labels.shape)}")
        if tasks is not None and tasks.shape != (len(images),):
            raise ValueError(f"tasks must have shape ({len(images)},), got {tuple(tasks.shape)}")
        self.images, self.labels, self.tasks = images, labels.long(), None if tasks is None else tasks.long()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return len(self.images)

    def _gather(self, index) -> dict[str, torch.Tensor]:
        item = {"x": self.images[index], "y": self.labels[index]}
        if self.tasks is not None:
            item["task"] = self.tasks[index]
        return item

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self._gather(index)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return self._gather(torch.as_tensor(indices, dtype=torch.long))

    def subset(self, index: torch.Tensor) -> "ImageTensorDataset":
        return ImageTensorDataset(*(t[index] if t is not None else None for t in (self.images, self.labels, self.tasks)))


def to_float_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch with uint8 images turned into floats in [0, 1] (datamodules call it on the device)."""
    return {**batch, "x": _TO_FLOAT(batch["x"])}


def _already_batched(batch):
    return batch


def batch_loader(
    dataset: ImageTensorDataset,
    batch_size: int,
    shuffle: bool,
    drop_last: bool = False,
    seed: int = 0,
    num_replicas: int = 1,
    rank: int = 0,
) -> DataLoader:
    """A DataLoader that gathers whole batches at once; with num_replicas > 1 each rank reads its own shard.

    Sharding is done here (not by Lightning's sampler replacement, which the trainer configs switch off with
    ``use_distributed_sampler: false``) so that the same loader serves single-process and DDP runs. Lightning
    calls ``set_epoch`` on the inner sampler, so each epoch has its own seeded order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if shuffle or num_replicas > 1:
        sampler = DistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(dataset, batch_sampler=BatchSampler(sampler, batch_size, drop_last), collate_fn=_already_batched)
