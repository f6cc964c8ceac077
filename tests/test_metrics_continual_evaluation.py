"""ContinualEvaluator: R rows at task boundaries (task-agnostic and task-aware), b once, the generator and retention
curves, its state across a checkpoint, and a retention stream refused when it cannot work."""

from __future__ import annotations

import pytest
import torch

from lossy_memory.metrics.continual_evaluation import ContinualEvaluator

TASKS = [(0, 1), (2, 3)]


def task_batches(task: int):
    y = torch.tensor([2 * task, 2 * task + 1] * 5)
    yield y.float().view(-1, 1, 1, 1) / 10, y


def always(label: int):
    return lambda x: torch.nn.functional.one_hot(torch.full((len(x),), label), 4).float()


def test_rows_hold_task_agnostic_and_task_aware_accuracy():
    evaluator = ContinualEvaluator(TASKS, task_batches)
    evaluator.start(always(0), None)
    assert evaluator.matrices["agnostic"].random_init.tolist() == [0.5, 0.0]
    perfect = lambda x: torch.nn.functional.one_hot((x.flatten() * 10).round().long(), 4).float()  # noqa: E731
    logs = evaluator.end_task(0, perfect, None, examples_seen=100)
    assert evaluator.matrices["agnostic"].values[0].tolist() == [1.0, 1.0] and logs["cl/seen_tasks_accuracy"] == 1.0
    evaluator.end_task(1, always(0), None, examples_seen=200)
    # always class 0: half of task 0 right; task 1 never agnostic, but task-aware masks to {2, 3}: argmax is class 2
    assert evaluator.matrices["agnostic"].values[1].tolist() == [0.5, 0.0]
    assert evaluator.matrices["aware"].values[1].tolist() == [0.5, 0.5]
    metrics = evaluator.metrics()
    assert metrics["tasks_trained"] == 2 and metrics["final_average_accuracy"] == 0.25 and metrics["forgetting"] == 0.5
    assert metrics["forward_transfer"] == pytest.approx(1.0 - 0.0)  # R[0, 1] - b[1]


def test_generator_distortion_is_measured_on_the_tasks_seen():
    evaluator = ContinualEvaluator(TASKS, task_batches)
    evaluator.start(always(0), lambda x: x + 0.25)
    evaluator.end_task(0, always(0), lambda x: x * 0, examples_seen=40)
    assert evaluator.generator_curve == [(0, 0.25), (40, pytest.approx(0.05))]  # mean of |x| over task 0: (0 + 0.1) / 2
    assert evaluator.record(evaluator.metrics())["generator_distortion"]["examples"] == [0, 40]


def test_retention_gets_one_point_per_interval_crossed_and_survives_a_checkpoint():
    evaluator = ContinualEvaluator(TASKS, task_batches, retention_task=1, retention_interval=5)
    evaluator.end_task(0, always(0), None, examples_seen=10)
    assert evaluator.retention_initial == 0.5
    assert evaluator.trained(0, 7, always(0)) == {}  # not the retention phase
    assert evaluator.trained(1, 7, always(1))["cl/retention"] == 0.5
    twin = ContinualEvaluator(TASKS, task_batches, retention_task=1, retention_interval=5)
    twin.load_state_dict(evaluator.state_dict())
    twin.trained(1, 8, always(1))  # 15 seen: marks 10 and 15 with one measurement
    assert twin.retention_curve == [(5, 0.5), (10, 0.5), (15, 0.5)]
    assert torch.equal(twin.matrices["agnostic"].values[0], evaluator.matrices["agnostic"].values[0])


def test_a_retention_stream_without_an_interval_or_earlier_tasks_is_refused():
    with pytest.raises(ValueError, match="retention_interval >= 1"):
        ContinualEvaluator(TASKS, task_batches, retention_task=1, retention_interval=None)
    with pytest.raises(ValueError, match="retention task after the first"):
        ContinualEvaluator(TASKS, task_batches, retention_task=0, retention_interval=5)
