"""Task streams: task membership, one ordered pass, per-task test sets, GEM's transforms, and input errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_formats import CIFAR100_COARSE_OF_FINE, write_cifar100, write_mnist, write_omniglot
from hydra.utils import instantiate
from PIL import Image

from conftest import compose_config
from lossy_memory.data import (
    CIFAR100Stream,
    OmniglotStream,
    PermutedMNISTStream,
    RotatedMNISTStream,
    SplitMNISTStream,
    TaskOrderBatchSampler,
    TaskStreamDataModule,
)


@pytest.fixture
def mnist_root(tmp_path: Path) -> tuple[Path, dict]:
    return tmp_path, write_mnist(tmp_path)  # 40 train (4 per digit), 20 test (2 per digit)


def _one_pass(stream: TaskStreamDataModule) -> list[dict[str, torch.Tensor]]:
    return list(stream.train_dataloader())


# -- the shared stream machinery, on split MNIST ---------------------------------------------------------
def test_split_mnist_tasks_hold_digit_pairs_with_task_ids(mnist_root) -> None:
    root, written = mnist_root
    stream = SplitMNISTStream(root, download=False, batch_size=3)
    stream.setup()
    assert stream.num_tasks == 5 and stream.num_classes == 10
    assert stream.task_classes == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    for t, classes in enumerate(stream.task_classes):
        train, test = stream.task_train_set(t), stream.task_test_set(t)
        assert (len(train), len(test)) == (8, 4)
        assert set(train.labels.tolist()) == set(test.labels.tolist()) == set(classes)
        assert (train.tasks == t).all() and (test.tasks == t).all()
        in_task = np.isin(written["test"].labels, classes)
        assert torch.equal(test.images, torch.from_numpy(written["test"].images[in_task]))  # file order kept
    loaders = stream.test_dataloader()
    assert len(loaders) == 5 and stream.test_splits == [f"test_task{t}" for t in range(5)]
    assert [next(iter(loader))["task"].unique().tolist() for loader in loaders] == [[t] for t in range(5)]
    assert len(stream.val_set) == 20  # validation: every task's test set together


def test_one_pass_visits_tasks_in_order_and_each_example_once(mnist_root) -> None:
    root, _ = mnist_root
    stream = SplitMNISTStream(root, download=False, batch_size=3, seed=7)
    stream.setup()
    batches = _one_pass(stream)
    assert len(batches) == len(stream.train_dataloader()) == 5 * 3  # ceil(8 / 3) batches per task
    assert all(len(b["task"].unique()) == 1 for b in batches)  # no batch spans two tasks
    tasks = torch.cat([b["task"] for b in batches])
    assert (tasks.diff() >= 0).all() and tasks.unique().tolist() == [0, 1, 2, 3, 4]
    seen = torch.cat([b["x"] for b in batches]).flatten(1)
    assert len(seen) == 40 and len(torch.unique(seen, dim=0)) == 40
    assert not torch.equal(seen, stream.train_set.images.flatten(1))  # shuffled within tasks
    for b in batches:
        assert set(b) == {"x", "y", "task", "task_id"} and set(b["y"].tolist()) <= set(stream.task_classes[b["task_id"]])
        assert (b["task"] == b["task_id"]).all()


def test_order_is_fixed_by_the_seed(mnist_root) -> None:
    root, _ = mnist_root

    def pixels_seen(seed: int) -> torch.Tensor:
        stream = SplitMNISTStream(root, download=False, batch_size=4, seed=seed)
        stream.setup()
        return torch.cat([b["x"].flatten(1)[:, :8] for b in _one_pass(stream)])

    assert torch.equal(pixels_seen(0), pixels_seen(0))
    assert not torch.equal(pixels_seen(0), pixels_seen(1))


def test_batch_size_one_streams_every_example_alone(mnist_root) -> None:
    root, _ = mnist_root
    stream = SplitMNISTStream(root, download=False, batch_size=1)
    stream.setup()
    batches = _one_pass(stream)
    assert len(batches) == 40 and all(b["x"].shape == (1, 1, 28, 28) and b["task"].shape == (1,) for b in batches)
    x = stream.on_after_batch_transfer(batches[0], 0)["x"]
    assert x.dtype == torch.float32 and torch.allclose(x * 255, batches[0]["x"].float())


def test_ranks_get_equal_shards_of_every_task() -> None:
    bounds = [(0, 5), (5, 12)]
    ranks = [list(TaskOrderBatchSampler(bounds, batch_size=2, seed=0, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(TaskOrderBatchSampler(bounds, 2, 0, num_replicas=2)) == 4
    for batches in ranks:
        assert all(all(i < 5 for i in b) or all(i >= 5 for i in b) for b in batches)
    covered = {i for batches in ranks for b in batches for i in b}
    assert covered == set(range(12))


def test_num_tasks_keeps_the_first_tasks_and_rejects_too_many(mnist_root) -> None:
    root, _ = mnist_root
    stream = SplitMNISTStream(root, download=False, num_tasks=2)
    stream.setup()
    assert stream.num_tasks == 2 and len(stream.train_set) == 16 and len(stream.test_dataloader()) == 2
    with pytest.raises(IndexError, match="tasks 0..1"):
        stream.task_train_set(2)
    with pytest.raises(ValueError, match="num_tasks=6 but the stream has only 5 tasks"):
        SplitMNISTStream(root, download=False, num_tasks=6).setup()
    with pytest.raises(ValueError, match="num_tasks must be >= 1"):
        SplitMNISTStream(root, download=False, num_tasks=0)
    with pytest.raises(ValueError, match="batch_size"):
        SplitMNISTStream(root, download=False, batch_size=0)


def test_a_task_without_examples_is_an_error(tmp_path: Path) -> None:
    write_mnist(tmp_path, digits=range(9))  # no 9s: task 4 (8/9) still has its 8s
    SplitMNISTStream(tmp_path, download=False).setup()
    write_mnist(tmp_path, digits=range(8))  # no 8s or 9s: task 4 is empty
    with pytest.raises(ValueError, match=r"task 4 \(classes \[8, 9\]\) has no training examples"):
        SplitMNISTStream(tmp_path, download=False).setup()


# -- GEM's permuted and rotated MNIST ------------------------------------------------------------------------
def test_permuted_mnist_permutes_each_task_and_samples_without_replacement(mnist_root) -> None:
    root, written = mnist_root
    stream = PermutedMNISTStream(root, download=False, num_tasks=3, samples_per_task=10, seed=5)
    stream.setup()
    originals = torch.from_numpy(written["train"].images).flatten(1)
    test_originals = torch.from_numpy(written["test"].images).flatten(1)
    assert stream.num_tasks == 3 and stream.task_classes == [tuple(range(10))] * 3
    assert len({tuple(p.tolist()) for p in stream.pixel_maps}) == 3
    for t, permutation in enumerate(stream.pixel_maps):
        assert sorted(permutation.tolist()) == list(range(784))
        test = stream.task_test_set(t)
        assert torch.equal(test.images.flatten(1), test_originals[:, permutation])
        assert torch.equal(test.labels, torch.from_numpy(written["test"].labels))
        train = stream.task_train_set(t)
        unpermuted = torch.empty_like(train.images.flatten(1))
        unpermuted[:, permutation] = train.images.flatten(1)
        match = (unpermuted[:, None] == originals[None]).all(-1).int().argmax(1)  # index of each source image
        assert torch.equal(unpermuted, originals[match]) and len(match.unique()) == 10
        assert torch.equal(train.labels, torch.from_numpy(written["train"].labels)[match])
    again = PermutedMNISTStream(root, download=False, num_tasks=3, samples_per_task=10, seed=5)
    again.setup()
    assert torch.equal(again.train_set.images, stream.train_set.images)


def test_rotated_mnist_follows_gem_angles_and_pil_rotation(mnist_root) -> None:
    root, written = mnist_root
    stream = RotatedMNISTStream(root, download=False, num_tasks=4, samples_per_task=5, seed=2)
    stream.setup()
    bands = [(45 * t, 45 * (t + 1)) for t in range(4)]  # 180 degrees in 4 bands
    assert all(low <= angle < high for angle, (low, high) in zip(stream.angles, bands))
    for t, angle in enumerate(stream.angles):
        # GEM's mnist_rotations.py: Image.fromarray(x, mode="L").rotate(angle)
        expected = np.stack([np.asarray(Image.fromarray(x[0]).rotate(angle)) for x in written["test"].images])
        assert torch.equal(stream.task_test_set(t).images[:, 0], torch.from_numpy(expected))
        assert len(stream.task_train_set(t)) == 5
    assert not torch.equal(stream.task_test_set(0).images, stream.task_test_set(1).images)


def test_transform_streams_validate_their_sizes(mnist_root) -> None:
    root, _ = mnist_root
    with pytest.raises(ValueError, match="samples_per_task=41 but MNIST has 40 training examples"):
        PermutedMNISTStream(root, download=False, samples_per_task=41).setup()
    with pytest.raises(ValueError, match="num_tasks must be a number"):
        RotatedMNISTStream(root, download=False, num_tasks=None)
    with pytest.raises(ValueError, match="min_angle must be below"):
        RotatedMNISTStream(root, download=False, min_angle=90, max_angle=0)


# -- CIFAR-100 and Omniglot streams ----------------------------------------------------------------------
@pytest.mark.parametrize("split", ["superclass", "gem"])
def test_cifar100_stream_has_20_tasks_of_5_fine_classes(tmp_path: Path, split: str) -> None:
    written = write_cifar100(tmp_path)
    stream = CIFAR100Stream(tmp_path, download=False, split=split)
    stream.setup()
    assert stream.num_tasks == 20 and stream.num_classes == 100
    for t, classes in enumerate(stream.task_classes):
        expected = np.flatnonzero(CIFAR100_COARSE_OF_FINE == t) if split == "superclass" else np.arange(5 * t, 5 * t + 5)
        assert classes == tuple(expected.tolist())
        train, test = stream.task_train_set(t), stream.task_test_set(t)
        assert sorted(train.labels.tolist()) == sorted(expected.tolist() * 2) and sorted(test.labels.tolist()) == expected.tolist()
        in_task = np.isin(written["test"].labels, expected)
        assert torch.equal(test.images, torch.from_numpy(written["test"].images[in_task]))


def test_cifar100_stream_rejects_an_unknown_split(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'superclass' or 'gem'"):
        CIFAR100Stream(tmp_path, split="random")


def test_omniglot_stream_has_one_task_per_alphabet(tmp_path: Path) -> None:
    write_omniglot(tmp_path, {"images_background": {"Bengali": 2, "Latin": 1}, "images_evaluation": {"Avesta": 3}})
    stream = OmniglotStream(tmp_path, download=False, batch_size=16)
    stream.setup()
    assert stream.num_tasks == 3 and stream.task_classes == [(0, 1, 2), (3, 4), (5,)]  # Avesta, Bengali, Latin
    assert [len(stream.task_train_set(t)) for t in range(3)] == [54, 36, 18]
    assert [len(stream.task_test_set(t)) for t in range(3)] == [6, 4, 2]
    assert stream.image_shape == (1, 28, 28)
    assert torch.cat([b["task"] for b in _one_pass(stream)]).bincount().tolist() == [54, 36, 18]


# -- configs and the real data ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, overrides, stream_type, num_tasks",
    [
        ("mnist_split", [], SplitMNISTStream, 5),
        ("mnist_permuted", ["data.samples_per_task=10", "data.num_tasks=2"], PermutedMNISTStream, 2),
        ("mnist_rotated", ["data.samples_per_task=10", "data.num_tasks=2"], RotatedMNISTStream, 2),
        ("cifar100_stream", ["data.split=gem"], CIFAR100Stream, 20),
        ("omniglot_stream", ["data.root_subdir=omniglot-small", "data.sets=null"], OmniglotStream, 1),
    ],
)
def test_stream_configs_instantiate(tmp_path: Path, name: str, overrides: list[str], stream_type: type, num_tasks: int) -> None:
    write_mnist(tmp_path)
    write_cifar100(tmp_path)
    write_omniglot(tmp_path, {"images_background": {"Greek": 1}}, subdir="omniglot-small")
    cfg = compose_config([f"data={name}", f"paths.data_dir={tmp_path}", "data.download=false", *overrides], tmp_path / "run")
    stream = instantiate(cfg.data)
    stream.setup()
    assert type(stream) is stream_type and stream.num_tasks == num_tasks and stream.batch_size == 10
    assert stream.image_shape == tuple(cfg.data.image_shape)


def test_real_split_mnist_task_sizes(real_data_dir: Path) -> None:
    stream = SplitMNISTStream(real_data_dir, download=False)
    stream.setup()
    assert [len(stream.task_train_set(t)) for t in range(5)] == [12665, 12089, 11263, 12183, 11800]
    assert [len(stream.task_test_set(t)) for t in range(5)] == [2115, 2042, 1874, 1986, 1983]
    assert len(stream.train_dataloader()) == sum(-(-n // 10) for n in [12665, 12089, 11263, 12183, 11800])


def test_the_stream_sampler_resumes_after_the_loads_it_handed_out():
    bounds = [(0, 7), (7, 12)]
    whole = list(TaskOrderBatchSampler(bounds, batch_size=2, seed=3))
    sampler = TaskOrderBatchSampler(bounds, batch_size=2, seed=3)
    first = [load for _, load in zip(range(3), sampler)]
    state = sampler.state_dict()
    assert state == {"loads": 3}
    resumed = TaskOrderBatchSampler(bounds, batch_size=2, seed=3)
    resumed.load_state_dict(state)
    assert first + list(resumed) == whole  # the resumed pass starts with the first load not handed out
    assert list(resumed) == whole  # and only that pass: the next one is the whole stream again
    with pytest.raises(ValueError, match="outside this stream"):
        resumed.load_state_dict({"loads": len(whole) + 1})


def test_a_training_load_carries_its_task_as_a_number_and_never_mixes_tasks():
    from lossy_memory.data.streams import _one_task_load

    load = _one_task_load({"x": torch.zeros(3, 1, 2, 2), "y": torch.zeros(3, dtype=torch.long), "task": torch.full((3,), 2)})
    assert load["task_id"] == 2 and isinstance(load["task_id"], int)
    with pytest.raises(ValueError, match="two tasks"):
        _one_task_load({"x": torch.zeros(2, 1, 2, 2), "y": torch.zeros(2, dtype=torch.long), "task": torch.tensor([0, 1])})
