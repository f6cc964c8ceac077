"""Replay batches: N mini-batches drawn from an episodic memory and decoded before the updates, mixed after the
incoming examples with their own labels and task ids; the incoming batch alone while the memory is empty."""

from __future__ import annotations

import pytest
import torch

from lossy_memory.memory import EpisodicMemory, mix_replayed

SHAPE = (1, 2, 2)


def memory_of_labels(n: int = 20) -> EpisodicMemory:
    """A lossless memory whose image k is filled with 10 * label (so a replayed row shows which label it must carry)."""
    memory = EpisodicMemory("lossless", budget_bits=10_000, seed=1)
    memory.build(SHAPE, num_classes=10, num_tasks=4)
    labels = torch.arange(n) % 10
    memory.add((labels * 10 / 255).view(-1, 1, 1, 1).expand(n, *SHAPE).clone(), labels, task=3)
    return memory


def incoming(n: int = 5, tasks: bool = False) -> dict:
    batch = {"x": torch.full((n, *SHAPE), 1.0), "y": torch.arange(n)}
    if tasks:
        batch["task"] = torch.zeros(n, dtype=torch.long)
    return batch


def test_replayed_labels_and_tasks_follow_their_images_in_n_separate_draws():
    batches = memory_of_labels().replay_batches(incoming(tasks=True), count=2, n=7)
    assert len(batches) == 2
    for mixed in batches:
        assert mixed["x"].shape == (12, *SHAPE) and mixed["replayed"].tolist() == [False] * 5 + [True] * 7
        assert torch.equal(mixed["x"][:5], incoming()["x"]) and torch.equal(mixed["y"][:5], torch.arange(5))
        assert torch.equal(mixed["y"][5:], (mixed["x"][5:, 0, 0, 0] * 255 / 10).round().long())
        assert mixed["task"].tolist() == [0] * 5 + [3] * 7
    assert not torch.equal(batches[0]["y"], batches[1]["y"])  # two separate draws


def test_replay_size_defaults_to_the_incoming_batch_size_and_an_empty_memory_replays_nothing():
    assert all(len(m["x"]) == 10 for m in memory_of_labels().replay_batches(incoming(), count=2))
    empty = EpisodicMemory("lossless", budget_bits=10_000)
    empty.build(SHAPE, num_classes=10, num_tasks=4)
    batches = empty.replay_batches(incoming(tasks=True), count=3)
    assert len(batches) == 3
    for mixed in batches:
        assert torch.equal(mixed["x"], incoming()["x"]) and not mixed["replayed"].any() and "task" in mixed


def test_replayed_images_of_another_shape_are_refused():
    with pytest.raises(ValueError, match="replayed images have shape"):
        mix_replayed(incoming(), (torch.zeros(2, 1, 3, 3), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long)))


def test_a_budget_in_bits_overrides_the_configs_default_size_in_images():
    memory = EpisodicMemory("lossless", lossless_equivalent=10, budget_bits=5 * (4 * 8 + 16))
    memory.build(SHAPE, num_classes=10, num_tasks=4)
    assert memory.budget_bits == 240 and memory.capacity == 5  # 5 items of 4 pixels, an 8-bit label and task id
