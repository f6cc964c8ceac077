"""Data loading: examples/s the MNIST train loader delivers on one core, so that loading never bounds training.

The project's loader is ``MNISTDataModule.train_dataloader()`` (uint8 tensors in memory, one gather per batch)
followed by ``on_after_batch_transfer`` (the uint8 -> float conversion Lightning applies on the device). The
reference is what one would write by default: ``torchvision.datasets.MNIST(transform=ToTensor())`` with a
shuffling ``DataLoader`` (PIL image and conversion per example, default collate). Each figure is the best of
``REPEATS`` passes over the first ``EXAMPLES`` training examples, iterator creation (the epoch's shuffle) included,
per wall-clock second and per CPU second of this process. The bar (>= 20,000 examples/s on one core, at every
batch size) is judged per CPU second: on a shared machine the wall-clock rate says as much about the neighbours.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

import torch
from torch.utils.data import DataLoader
from torchvision.datasets import MNIST
from torchvision.transforms import ToTensor

from lossy_memory.data import MNISTDataModule
from lossy_memory.runtime import default_data_dir

BATCH_SIZES = (1, 10, 100)
EXAMPLES = 20_000
REPEATS = 3
BAR = 20_000


def rate(make_batches: Callable[[], Iterable[torch.Tensor]]) -> tuple[float, float]:
    """Best examples per wall second and per CPU second over REPEATS passes of EXAMPLES examples each."""
    wall, cpu = 0.0, 0.0
    for _ in range(REPEATS):
        start_wall, start_cpu, seen = time.perf_counter(), time.process_time(), 0
        for x in make_batches():
            seen += len(x)
            if seen >= EXAMPLES:
                break
        wall = max(wall, seen / (time.perf_counter() - start_wall))
        cpu = max(cpu, seen / (time.process_time() - start_cpu))
    return wall, cpu


def project_batches(datamodule: MNISTDataModule) -> Callable[[], Iterable[torch.Tensor]]:
    def batches() -> Iterable[torch.Tensor]:
        for batch in datamodule.train_dataloader():
            yield datamodule.on_after_batch_transfer(batch, 0)["x"]

    return batches


def naive_batches(dataset: MNIST, batch_size: int) -> Callable[[], Iterable[torch.Tensor]]:
    def batches() -> Iterable[torch.Tensor]:
        for x, _ in DataLoader(dataset, batch_size=batch_size, shuffle=True):
            yield x

    return batches


def main() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data_dir = default_data_dir()
        naive_set = MNIST(data_dir, train=True, transform=ToTensor())
        print(f"MNIST train loader, 1 thread, best of {REPEATS} passes over {EXAMPLES} examples, "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"{'batch':>6}{'project ex/s':>14}{'ex/CPU-s':>10}{'naive ex/s':>12}{'ex/CPU-s':>10}{'speed-up':>10}   bar: >= {BAR:,} ex/CPU-s")
        for batch_size in BATCH_SIZES:
            datamodule = MNISTDataModule(data_dir, batch_size=batch_size, download=False)
            datamodule.setup("fit")
            project_wall, project_cpu = rate(project_batches(datamodule))
            naive_wall, naive_cpu = rate(naive_batches(naive_set, batch_size))
            verdict = "OK" if project_cpu >= BAR else "BELOW BAR"
            print(f"{batch_size:>6}{project_wall:>14,.0f}{project_cpu:>10,.0f}{naive_wall:>12,.0f}{naive_cpu:>10,.0f}"
                  f"{project_cpu / naive_cpu:>9.1f}x   {verdict}")
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
