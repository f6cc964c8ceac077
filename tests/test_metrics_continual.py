"""Continual-learning metrics on a hand-made accuracy matrix, against values worked out by hand."""

import math

import pytest
import torch

from lossy_memory.metrics.continual import (
    AccuracyMatrix,
    average_incremental_accuracy,
    backward_transfer,
    correct_counts,
    final_average_accuracy,
    forgetting,
    forward_transfer,
    summarize,
    task_masked_logits,
)

# R[i, j]: accuracy on task j after training task i; b: a random model's accuracy per task.
R = torch.tensor([[0.90, 0.10, 0.20],
                  [0.95, 0.80, 0.30],
                  [0.60, 0.50, 0.90]])
b = torch.tensor([0.10, 0.15, 0.10])


def test_final_average_accuracy_is_the_mean_of_the_last_row():
    assert final_average_accuracy(R) == pytest.approx((0.6 + 0.5 + 0.9) / 3)


def test_average_incremental_accuracy_averages_each_step_over_the_tasks_seen():
    # step 0: 0.9; step 1: (0.95 + 0.8) / 2 = 0.875; step 2: 2.0 / 3
    assert average_incremental_accuracy(R) == pytest.approx((0.9 + 0.875 + 2.0 / 3) / 3)


def test_backward_transfer_compares_the_end_with_just_after_training():
    assert backward_transfer(R) == pytest.approx(((0.6 - 0.9) + (0.5 - 0.8)) / 2)


def test_forward_transfer_compares_before_training_with_a_random_model():
    assert forward_transfer(R, b) == pytest.approx(((0.10 - 0.15) + (0.30 - 0.10)) / 2)


def test_forgetting_takes_the_best_accuracy_each_task_ever_had():
    # task 0 peaked at 0.95 (after task 1), ends at 0.6; task 1 peaked at 0.8, ends at 0.5
    assert forgetting(R) == pytest.approx(((0.95 - 0.6) + (0.8 - 0.5)) / 2)
    assert forgetting(R) != pytest.approx(-backward_transfer(R))


def test_summary_and_one_task_streams():
    summary = summarize(R, b)
    assert set(summary) == {"final_average_accuracy", "average_incremental_accuracy", "backward_transfer", "forgetting", "forward_transfer"}
    one = summarize(torch.tensor([[0.7]]), [0.1])
    assert one["final_average_accuracy"] == pytest.approx(0.7) and one["average_incremental_accuracy"] == pytest.approx(0.7)
    assert math.isnan(one["backward_transfer"]) and math.isnan(one["forward_transfer"]) and math.isnan(one["forgetting"])


def test_bad_matrices_are_rejected():
    with pytest.raises(ValueError, match="square"):
        final_average_accuracy(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="NaN"):
        final_average_accuracy(torch.tensor([[0.5, float("nan")], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="one entry per task"):
        forward_transfer(R, [0.1, 0.1])


def test_task_aware_prediction_masks_to_the_tasks_classes():
    logits = torch.tensor([[1.0, 5.0, 3.0, 0.0], [0.0, 1.0, 2.0, 9.0]])
    masked = task_masked_logits(logits, (0, 2))
    assert masked.argmax(1).tolist() == [2, 2]
    assert torch.isinf(masked[:, [1, 3]]).all()
    labels = torch.tensor([2, 3])
    assert correct_counts(logits, labels, (0, 2)) == (1, 1)  # agnostic: row 1 right; aware: row 0 right
    assert correct_counts(logits, labels, (2, 3)) == (1, 2)
    with pytest.raises(ValueError, match="lie in"):
        task_masked_logits(logits, (0, 7))


def test_accuracy_matrix_fills_row_by_row_and_round_trips():
    matrix = AccuracyMatrix(3)
    assert not matrix.complete
    for i in range(3):
        matrix.set_row(i, R[i])
    matrix.set_random_init(b)
    assert matrix.complete and matrix.summary() == summarize(R, b)
    copy = AccuracyMatrix(3)
    copy.load_state_dict(matrix.state_dict())
    assert torch.equal(copy.values, matrix.values) and torch.equal(copy.random_init, matrix.random_init)
    with pytest.raises(ValueError, match="one accuracy per task"):
        matrix.set_row(0, [0.5])
