"""Task streams for continual learning: tasks in a fixed order, seen once, with one test set per task.

A stream is built from the train and test splits of an ImageDataModule (its ``source``): class-split streams
partition them by a class -> task table (split MNIST, CIFAR-100 super-classes, Omniglot alphabets), transform
streams draw a sample per task and transform it (permuted and rotated MNIST, as in GEM, Lopez-Paz & Ranzato
2017). Examples are dicts with "x" (uint8 image, float after transfer), "y" (class label) and "task".
"""

from __future__ import annotations

import itertools
import math
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from lossy_memory.data.batching import ImageTensorDataset, batch_loader, to_float_batch
from lossy_memory.data.cifar import CIFAR100DataModule
from lossy_memory.data.image_datamodule import ImageDataModule
from lossy_memory.data.mnist import MNISTDataModule
from lossy_memory.data.omniglot import OmniglotDataModule


@dataclass(frozen=True)
class StreamData:
    """A whole stream: train and test examples with task ids, grouped by task in task order, and each task's classes.

    Grouping lets every per-task set be a view of one tensor: no copy per task, one allocation per split.
    """

    train: ImageTensorDataset
    test: ImageTensorDataset
    classes: list[tuple[int, ...]]


class TaskOrderBatchSampler(Sampler[list[int]]):
    """Batches over tasks laid out contiguously: tasks in order, examples shuffled within each task (seeded).

    A batch never holds two tasks (as GEM's ``Continuum``), so a learner sees exact task boundaries. The order
    is the same on every iteration: the stream is one fixed sequence. With ``num_replicas`` > 1 each task is
    padded (by repeating its first shuffled examples) to a multiple of the replica count and dealt out, so every
    rank runs the same number of batches per task and DDP stays in step.

    ``batches_per_step`` > 1 hands up to that many consecutive batches of one task together, as one index list (a
    *load*): the learner splits it back into batches of ``batch_size`` (only a task's last batch can be short, and it
    ends its load), so the updates are those of single batches while the framework's per-step work is paid once a load.

    Stateful, for resuming mid-stream: ``state_dict`` holds the loads handed out so far in this pass, and after
    ``load_state_dict`` the next pass starts right after them (``StreamLoader`` lets Lightning save and restore it).
    """

    def __init__(self, bounds: Sequence[tuple[int, int]], batch_size: int, seed: int, num_replicas: int = 1, rank: int = 0,
                 batches_per_step: int = 1):
        if batch_size < 1 or batches_per_step < 1:
            raise ValueError(f"batch_size and batches_per_step must be >= 1, got {batch_size} and {batches_per_step}")
        self.bounds, self.batch_size, self.seed = list(bounds), batch_size, seed
        self.num_replicas, self.rank, self.batches_per_step = num_replicas, rank, batches_per_step
        self.position = 0  # loads handed out in the running pass
        self._resume_at = 0  # where the next pass starts (set by load_state_dict)

    def _shards(self) -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        for start, stop in self.bounds:
            order = start + torch.randperm(stop - start, generator=generator)
            padded = math.ceil(len(order) / self.num_replicas) * self.num_replicas
            yield order.repeat(math.ceil(padded / len(order)))[:padded][self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        self.position, skip, self._resume_at = self._resume_at, self._resume_at, 0
        loads = (load for shard in self._shards() for load in shard.split(self.batch_size * self.batches_per_step))
        for load in itertools.islice(loads, skip, None):
            self.position += 1
            yield load.tolist()

    def state_dict(self) -> dict[str, int]:
        return {"loads": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if not 0 <= int(state["loads"]) <= len(self):
            raise ValueError(f"the checkpoint's stream position ({state['loads']} loads) lies outside this stream of {len(self)}: "
                             "resume with the data settings it was written with")
        self._resume_at = int(state["loads"])

    def __len__(self) -> int:
        per_load = self.batch_size * self.batches_per_step
        return sum(math.ceil(math.ceil((stop - start) / self.num_replicas) / per_load) for start, stop in self.bounds)


class StreamLoader(DataLoader):
    """A task stream's training loader: stateful through its ``TaskOrderBatchSampler``, so Lightning keeps the stream
    position in checkpoints and a resumed run continues with the first load it had not trained."""

    def state_dict(self) -> dict[str, int]:
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.load_state_dict(state)


def _one_task_load(load: dict[str, torch.Tensor]) -> dict:
    """A training load with its task as a number, ``task_id``, read here on the host: a learner needs it before any
    device work, and reading it from the load on an accelerator would wait for the device. A load never mixes tasks."""
    tasks = load["task"]
    task = int(tasks[0])
    if (tasks != task).any():
        raise ValueError("a batch holds examples of two tasks: the stream must not mix tasks within a batch")
    return {**load, "task_id": task}


def _task_bounds(dataset: ImageTensorDataset, num_tasks: int) -> list[tuple[int, int]]:
    """Each task's [start, stop) in a dataset grouped by task."""
    if len(dataset) and (dataset.tasks.diff() < 0).any():
        raise ValueError("stream examples must be grouped by task, in task order")
    ends = torch.bincount(dataset.tasks, minlength=num_tasks)[:num_tasks].cumsum(0).tolist()
    return list(zip([0, *ends[:-1]], ends))


class TaskStreamDataModule(L.LightningDataModule):
    """A sequence of tasks over a source ImageDataModule, served once in order.

    ``train_dataloader`` walks the tasks in order (``TaskOrderBatchSampler``); ``test_dataloader`` returns one
    loader per task (``test_splits`` names them); validation reads all test sets together (monitoring only).
    ``num_tasks`` keeps the first tasks of the stream (None: all of them); asking for more than the stream has,
    or a task with no examples, is an error at setup. ``batches_per_step``: incoming batches of ``batch_size``
    handed over per training step (``TaskOrderBatchSampler``); the learner still updates once per incoming batch.
    """

    name = "stream"

    def __init__(self, source: ImageDataModule, num_tasks: int | None = None, batch_size: int = 10, eval_batch_size: int = 1000,
                 seed: int = 0, batches_per_step: int = 1):
        super().__init__()
        if batch_size < 1 or eval_batch_size < 1 or batches_per_step < 1:
            raise ValueError(f"data.batch_size, data.eval_batch_size and data.batches_per_step must be >= 1, got {batch_size}, "
                             f"{eval_batch_size} and {batches_per_step}")
        self.batches_per_step = int(batches_per_step)
        if num_tasks is not None and num_tasks < 1:
            raise ValueError(f"data.num_tasks must be >= 1 or null (all tasks), got {num_tasks}")
        self.source, self.num_tasks_requested = source, num_tasks
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.train_set: ImageTensorDataset | None = None
        self.val_set: ImageTensorDataset | None = None
        self.task_classes: list[tuple[int, ...]] = []
        self._train_bounds: list[tuple[int, int]] = []
        self._test_bounds: list[tuple[int, int]] = []

    @abstractmethod
    def make_tasks(self, train: ImageTensorDataset, test: ImageTensorDataset) -> StreamData:
        """Every task the stream has, in order (``num_tasks`` is applied afterwards)."""

    def prepare_data(self) -> None:
        self.source.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        stream = self.build_stream()
        available = len(stream.classes)
        if available == 0:
            raise ValueError(f"{self.name}: no tasks: no class in {self.source.folder} belongs to a task")
        requested = available if self.num_tasks_requested is None else self.num_tasks_requested
        if requested > available:
            raise ValueError(f"{self.name}: data.num_tasks={requested} but the stream has only {available} tasks in {self.source.folder}")
        self._train_bounds, self._test_bounds = _task_bounds(stream.train, requested), _task_bounds(stream.test, requested)
        for t in range(requested):
            for split, (start, stop) in (("training", self._train_bounds[t]), ("test", self._test_bounds[t])):
                if start == stop:
                    raise ValueError(f"{self.name}: task {t} (classes {list(stream.classes[t])}) has no {split} examples in {self.source.folder}")
        self.task_classes = stream.classes[:requested]
        self.train_set = stream.train.subset(slice(0, self._train_bounds[-1][1]))
        self.val_set = stream.test.subset(slice(0, self._test_bounds[-1][1]))

    def build_stream(self) -> StreamData:
        """Every task the stream has, read from the source (``setup`` keeps the first ``num_tasks``)."""
        self.source.check_available()
        return self.make_tasks(self.source.load_split(train=True), self.source.load_split(train=False))

    # -- the stream's shape --------------------------------------------------------------------------
    @property
    def num_tasks(self) -> int:
        self.setup()
        return len(self.task_classes)

    @property
    def num_classes(self) -> int:
        self.setup()
        return self.source.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        self.setup()
        return self.train_set.image_shape

    def _slice(self, dataset: ImageTensorDataset, bounds: list[tuple[int, int]], task: int) -> ImageTensorDataset:
        if not 0 <= task < self.num_tasks:
            raise IndexError(f"{self.name} has tasks 0..{self.num_tasks - 1}, got task {task}")
        start, stop = bounds[task]
        return ImageTensorDataset(dataset.images[start:stop], dataset.labels[start:stop], dataset.tasks[start:stop])

    def task_train_set(self, task: int) -> ImageTensorDataset:
        """Task ``task``'s training examples (a view: no copy)."""
        return self._slice(self.train_set, self._train_bounds, task)

    def task_test_set(self, task: int) -> ImageTensorDataset:
        """Task ``task``'s test examples (a view: no copy)."""
        return self._slice(self.val_set, self._test_bounds, task)

    @property
    def test_splits(self) -> list[str]:
        return [f"test_task{t}" for t in range(self.num_tasks)]

    # -- loaders ---------------------------------------------------------------------------------------
    def _replicas(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_dataloader(self) -> DataLoader:
        num_replicas, rank = self._replicas()
        sampler = TaskOrderBatchSampler(self._train_bounds, self.batch_size, self.seed, num_replicas, rank, self.batches_per_step)
        return StreamLoader(self.train_set, batch_sampler=sampler, collate_fn=_one_task_load)

    def _eval_loader(self, dataset: ImageTensorDataset) -> DataLoader:
        num_replicas, rank = self._replicas()
        return batch_loader(dataset, self.eval_batch_size, shuffle=False, num_replicas=num_replicas, rank=rank)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> list[DataLoader]:
        return [self._eval_loader(self.task_test_set(t)) for t in range(self.num_tasks)]

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        return to_float_batch(batch)


class ClassSplitStream(TaskStreamDataModule):
    """Tasks that partition the classes: ``task_of_class()[c]`` is class c's task (-1: in no task)."""

    @abstractmethod
    def task_of_class(self) -> torch.Tensor: ...

    def make_tasks(self, train: ImageTensorDataset, test: ImageTensorDataset) -> StreamData:
        table = self.task_of_class()
        num_tasks = int(table.max()) + 1
        classes = [tuple((table == t).nonzero().squeeze(1).tolist()) for t in range(num_tasks)]
        return StreamData(self._grouped(train, table), self._grouped(test, table), classes)

    @staticmethod
    def _grouped(dataset: ImageTensorDataset, table: torch.Tensor) -> ImageTensorDataset:
        """The examples of classes in some task, with their task ids, grouped by task (file order within one)."""
        if len(dataset) and dataset.labels.max() >= len(table):
            raise ValueError(f"label {int(dataset.labels.max())} has no task: the class -> task table covers {len(table)} classes")
        tasks = table[dataset.labels]
        keep = (tasks >= 0).nonzero().squeeze(1)
        order = keep[torch.sort(tasks[keep], stable=True).indices]
        return ImageTensorDataset(dataset.images[order], dataset.labels[order], tasks[order])


class SplitMNISTStream(ClassSplitStream):
    """Split MNIST: 5 tasks of two digits each (0/1, 2/3, ...); labels stay the digits."""

    name = "split MNIST"

    def __init__(self, data_dir: str | Path, download: bool = True, image_shape: Sequence[int] | None = None, **kwargs):
        source = MNISTDataModule(data_dir, download=download, image_shape=image_shape)
        super().__init__(source, **kwargs)

    def task_of_class(self) -> torch.Tensor:
        return torch.arange(10) // 2


class CIFAR100Stream(ClassSplitStream):
    """CIFAR-100 in 20 tasks of 5 fine classes; labels are fine classes.

    ``split="superclass"``: task t holds the fine classes of coarse super-class t (the paper's split, read from
    the pickles' ``coarse_labels``). ``split="gem"``: task t holds fine classes 5t..5t+4 (GEM's split).
    """

    name = "CIFAR-100 stream"

    def __init__(
        self,
        data_dir: str | Path,
        download: bool = True,
        image_shape: Sequence[int] | None = None,
        split: Literal["superclass", "gem"] = "superclass",
        **kwargs,
    ):
        if split not in ("superclass", "gem"):
            raise ValueError(f"data.split must be 'superclass' or 'gem', got {split!r}")
        super().__init__(CIFAR100DataModule(data_dir, download=download, image_shape=image_shape, label_type="fine"), **kwargs)
        self.split = split

    def task_of_class(self) -> torch.Tensor:
        return self.source.fine_to_coarse if self.split == "superclass" else torch.arange(100) // 5


class OmniglotStream(ClassSplitStream):
    """Omniglot with one task per alphabet (sorted by name); labels are global character ids."""

    name = "Omniglot stream"

    def __init__(
        self,
        data_dir: str | Path,
        download: bool = True,
        image_shape: Sequence[int] | None = (1, 28, 28),
        root_subdir: str = "omniglot-py",
        sets: Sequence[str] | None = None,
        invert: bool = True,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        **kwargs,
    ):
        source = OmniglotDataModule(
            data_dir, download=download, image_shape=image_shape, root_subdir=root_subdir, sets=sets,
            invert=invert, test_fraction=test_fraction, split_seed=split_seed,
        )
        super().__init__(source, **kwargs)

    def task_of_class(self) -> torch.Tensor:
        return self.source.alphabet_of_class


def _with_fill_column(images: torch.Tensor) -> torch.Tensor:
    """Flattened images [N, P + 1] whose last column is 0: the black fill a pixel map's -1 reads."""
    return torch.cat([images.flatten(1), images.new_zeros(len(images), 1)], dim=1)


def _remap_into(out: torch.Tensor, flat: torch.Tensor, source: torch.Tensor) -> None:
    """out[:, k] = flat[:, source[k]] (fill column where source[k] is -1), written in place."""
    index = torch.where(source < 0, flat.shape[1] - 1, source)
    torch.gather(flat, 1, index.expand(len(flat), -1), out=out.view(len(flat), -1))


class TransformedMNISTStream(TaskStreamDataModule):
    """MNIST tasks that differ by a fixed pixel rearrangement, built as GEM's data scripts do.

    Per task (seeded by ``seed``): draw the transform, then ``samples_per_task`` training examples without
    replacement (GEM's ``--samples_per_task 1000``; None: all 60000); the task's test set is the whole test set,
    transformed. Both GEM transforms (a permutation, a nearest-neighbour rotation) move pixels without mixing
    them, so each is a pixel map applied by one gather, and the transformed uint8 images are precomputed:
    batches then cost no more than plain MNIST, and setup stays around a second for 20 tasks.
    """

    def __init__(
        self,
        data_dir: str | Path,
        download: bool = True,
        image_shape: Sequence[int] | None = None,
        num_tasks: int = 20,
        samples_per_task: int | None = 1000,
        **kwargs,
    ):
        if num_tasks is None:
            raise ValueError(f"{self.name}: data.num_tasks must be a number (the tasks are generated), got null")
        if samples_per_task is not None and samples_per_task < 1:
            raise ValueError(f"data.samples_per_task must be >= 1 or null (all), got {samples_per_task}")
        super().__init__(MNISTDataModule(data_dir, download=download, image_shape=image_shape), num_tasks=num_tasks, **kwargs)
        self.samples_per_task = samples_per_task
        self.pixel_maps: list[torch.Tensor] = []

    @abstractmethod
    def task_pixel_map(self, task: int, generator: torch.Generator, image_shape: tuple[int, ...]) -> torch.Tensor:
        """Draw task ``task``'s transform as a pixel map (see ``_remap_into``) (recording its parameter)."""

    def make_tasks(self, train: ImageTensorDataset, test: ImageTensorDataset) -> StreamData:
        count = len(train) if self.samples_per_task is None else self.samples_per_task
        if count > len(train):
            raise ValueError(f"{self.name}: data.samples_per_task={count} but MNIST has {len(train)} training examples")
        num_tasks = self.num_tasks_requested
        generator = torch.Generator().manual_seed(self.seed)
        train_flat, test_flat = _with_fill_column(train.images), _with_fill_column(test.images)
        train_images = torch.empty(num_tasks, count, *train.image_shape, dtype=torch.uint8)
        test_images = torch.empty(num_tasks, len(test), *test.image_shape, dtype=torch.uint8)
        train_labels = torch.empty(num_tasks, count, dtype=torch.long)
        for t in range(num_tasks):
            source = self.task_pixel_map(t, generator, train.image_shape)
            self.pixel_maps.append(source)
            sample = torch.randperm(len(train), generator=generator)[:count]
            _remap_into(train_images[t], train_flat[sample], source)
            _remap_into(test_images[t], test_flat, source)
            train_labels[t] = train.labels[sample]
        tasks = torch.arange(num_tasks)
        return StreamData(
            ImageTensorDataset(train_images.flatten(0, 1), train_labels.flatten(), tasks.repeat_interleave(count)),
            ImageTensorDataset(test_images.flatten(0, 1), test.labels.repeat(num_tasks), tasks.repeat_interleave(len(test))),
            [tuple(range(self.source.num_classes))] * num_tasks,
        )


class PermutedMNISTStream(TransformedMNISTStream):
    """Permuted MNIST: each task shuffles the pixels by its own seeded permutation (every task, as in GEM)."""

    name = "permuted MNIST"

    def task_pixel_map(self, task: int, generator: torch.Generator, image_shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randperm(math.prod(image_shape), generator=generator)


class RotatedMNISTStream(TransformedMNISTStream):
    """Rotated MNIST: task t rotates by an angle drawn uniformly in the t-th of ``num_tasks`` equal bands of
    [min_angle, max_angle) degrees (GEM: 0 to 180), counter-clockwise about the centre, nearest-neighbour, black
    fill, as PIL's ``Image.rotate`` in GEM's script. ``angles`` records them."""

    name = "rotated MNIST"

    def __init__(self, data_dir: str | Path, min_angle: float = 0.0, max_angle: float = 180.0, **kwargs):
        if not min_angle < max_angle:
            raise ValueError(f"data.min_angle must be below data.max_angle, got {min_angle} and {max_angle}")
        super().__init__(data_dir, **kwargs)
        self.min_angle, self.max_angle = min_angle, max_angle
        self.angles: list[float] = []

    def task_pixel_map(self, task: int, generator: torch.Generator, image_shape: tuple[int, ...]) -> torch.Tensor:
        width = (self.max_angle - self.min_angle) / self.num_tasks_requested
        angle = self.min_angle + width * (task + float(torch.rand((), generator=generator, dtype=torch.float64)))
        self.angles.append(angle)
        # Rotating an image whose pixels hold their own (1-based) index yields, per output pixel, the input
        # pixel nearest-neighbour rotation reads; 0 is the fill outside the rotated frame.
        index = torch.arange(1, math.prod(image_shape) + 1, dtype=torch.float32).view(image_shape)
        return F.rotate(index, angle, interpolation=InterpolationMode.NEAREST).flatten().round().long() - 1


class LongTermRetentionStream(TaskStreamDataModule):
    """A task stream followed by one more task, a "retention" phase of ``examples`` training examples of another
    dataset (the paper's Figure 4: the CIFAR-100 stream, then CIFAR-10), during which the learner measures how much
    of the stream it retains every ``interval`` examples (``retention_task``/``retention_interval``, read by the
    ContinualLearner).

    The extra dataset's labels are offset by the stream's number of classes (CIFAR-10 class k is label 100 + k), so
    one classifier head covers both (110 outputs) and evaluation stays task-agnostic over every class, as for the
    stream itself: no learner, strategy or classifier change, and forgetting of CIFAR-100 shows as CIFAR-10 classes
    taking over the argmax, which is what retention measures. The phase is task ``stream tasks``: it also gets a row
    and a column in R. Its examples are a seeded permutation of the extra training set, repeated when ``examples``
    exceeds it (each repetition is a copy in memory: 150 MB per CIFAR-10 pass); its test set is the extra test set.
    """

    def __init__(self, stream: TaskStreamDataModule, extra: ImageDataModule, examples: int, interval: int,
                 image_shape: Sequence[int] | None = None, batch_size: int = 10, eval_batch_size: int = 1000, seed: int = 0,
                 batches_per_step: int = 1):
        if not isinstance(stream, TaskStreamDataModule) or not isinstance(extra, ImageDataModule):
            raise ValueError(f"data.stream must be a task stream and data.extra an image datamodule, got "
                             f"{type(stream).__name__} and {type(extra).__name__}")
        if examples < 1 or interval < 1:
            raise ValueError(f"data.examples and data.interval must be >= 1, got {examples} and {interval}")
        if interval > examples:
            raise ValueError(f"data.interval={interval} exceeds data.examples={examples}: the retention curve would be empty")
        super().__init__(stream.source, num_tasks=None, batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed,
                         batches_per_step=batches_per_step)
        self.stream, self.extra = stream, extra
        self.examples, self.retention_interval = int(examples), int(interval)
        self.expected_shape = None if image_shape is None else tuple(int(s) for s in image_shape)
        self.name = f"{stream.name} then {extra.name}"

    def prepare_data(self) -> None:
        self.stream.prepare_data()
        self.extra.prepare_data()

    @property
    def label_offset(self) -> int:
        return self.stream.source.num_classes

    @property
    def num_classes(self) -> int:
        self.setup()
        return self.label_offset + self.extra.num_classes

    @property
    def retention_task(self) -> int:
        return self.num_tasks - 1

    def make_tasks(self, train: ImageTensorDataset, test: ImageTensorDataset) -> StreamData:
        raise NotImplementedError("built by build_stream from the stream and the extra dataset")

    def build_stream(self) -> StreamData:
        inner = self.stream.build_stream()
        kept = len(inner.classes) if self.stream.num_tasks_requested is None else self.stream.num_tasks_requested
        if kept > len(inner.classes):
            raise ValueError(f"{self.stream.name}: data.stream.num_tasks={kept} but the stream has only {len(inner.classes)} tasks")
        self.extra.check_available()
        extra_train, extra_test = self.extra.load_split(train=True), self.extra.load_split(train=False)
        shape = inner.train.image_shape
        for name, got in (("data.extra", extra_train.image_shape), ("data.image_shape", self.expected_shape or shape)):
            if tuple(got) != tuple(shape):
                raise ValueError(f"{self.name}: the stream's images are {list(shape)} but {name} gives {list(got)}")
        generator = torch.Generator().manual_seed(self.seed)
        passes = math.ceil(self.examples / len(extra_train))
        order = torch.cat([torch.randperm(len(extra_train), generator=generator) for _ in range(passes)])[: self.examples]

        def joined(base: ImageTensorDataset, extra: ImageTensorDataset) -> ImageTensorDataset:
            keep = base.tasks < kept  # grouped by task: the first tasks are a prefix
            return ImageTensorDataset(torch.cat([base.images[keep], extra.images]),
                                      torch.cat([base.labels[keep], extra.labels + self.label_offset]),
                                      torch.cat([base.tasks[keep], torch.full((len(extra),), kept, dtype=torch.long)]))

        classes = [*inner.classes[:kept], tuple(range(self.label_offset, self.label_offset + self.extra.num_classes))]
        return StreamData(joined(inner.train, extra_train.subset(order)), joined(inner.test, extra_test), classes)
