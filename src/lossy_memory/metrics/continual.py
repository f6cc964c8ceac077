"""Continual-learning metrics from the accuracy matrix (Lopez-Paz & Ranzato 2017; Chaudhry et al. 2018).

``R`` is a T x T matrix: ``R[i, j]`` is the test accuracy on task j after training on tasks 0..i. ``b`` (length
T) is the accuracy on each task of the model at random initialisation, which forward transfer compares against.

* final average accuracy ("retention", GEM's ACC): mean_j R[T-1, j]
* average incremental accuracy (Rebuffi et al., iCaRL): mean_i (mean_{j<=i} R[i, j])
* backward transfer (GEM's BWT): mean_{j<T-1} (R[T-1, j] - R[j, j]); negative values are forgetting
* forward transfer (GEM's FWT): mean_{j>=1} (R[j-1, j] - b[j])
* forgetting (Chaudhry et al. 2018): mean_{j<T-1} (max_{i<T-1} R[i, j] - R[T-1, j])

Task-aware ("task-incremental") accuracy restricts the prediction on task j's test set to task j's classes
(``task_masked_logits``); task-agnostic ("class-incremental") accuracy takes the argmax over every class.
Plain torch; metrics undefined for one task (the transfer terms and forgetting) are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def _check_matrix(R: torch.Tensor) -> torch.Tensor:
    R = torch.as_tensor(R, dtype=torch.float64)
    if R.dim() != 2 or R.shape[0] != R.shape[1] or R.shape[0] < 1:
        raise ValueError(f"the accuracy matrix must be square T x T with T >= 1, got shape {tuple(R.shape)}")
    if torch.isnan(R).any():
        raise ValueError("the accuracy matrix has missing (NaN) entries: every task must be evaluated after every task")
    return R


def final_average_accuracy(R: torch.Tensor) -> float:
    """Mean accuracy over all tasks after the last one: mean_j R[T-1, j]."""
    R = _check_matrix(R)
    return float(R[-1].mean())


def average_incremental_accuracy(R: torch.Tensor) -> float:
    """Mean over steps i of the mean accuracy on the tasks seen so far: mean_i mean_{j<=i} R[i, j]."""
    R = _check_matrix(R)
    T = R.shape[0]
    seen = torch.tril(torch.ones(T, T, dtype=torch.bool))
    return float(((R * seen).sum(1) / seen.sum(1)).mean())


def backward_transfer(R: torch.Tensor) -> float:
    """mean_{j<T-1} (R[T-1, j] - R[j, j]): how learning later tasks changed earlier ones (negative: forgetting)."""
    R = _check_matrix(R)
    T = R.shape[0]
    if T < 2:
        return math.nan
    return float((R[-1, :-1] - R.diagonal()[:-1]).mean())


def forward_transfer(R: torch.Tensor, b: torch.Tensor | Sequence[float]) -> float:
    """mean_{j>=1} (R[j-1, j] - b[j]): accuracy on a task before training on it, against a random initialisation."""
    R = _check_matrix(R)
    b = torch.as_tensor(b, dtype=torch.float64)
    T = R.shape[0]
    if b.shape != (T,):
        raise ValueError(f"the random-initialisation accuracies b must have one entry per task ({T}), got shape {tuple(b.shape)}")
    if T < 2:
        return math.nan
    return float((R.diagonal(offset=1) - b[1:]).mean())


def forgetting(R: torch.Tensor) -> float:
    """mean_{j<T-1} (max_{i<T-1} R[i, j] - R[T-1, j]) (Chaudhry et al. 2018): the drop from each task's best accuracy.

    The maximum runs over i >= j only in effect (before task j is trained its accuracy is a guess); it is taken
    over i in [j, T-1) as in Chaudhry et al.
    """
    R = _check_matrix(R)
    T = R.shape[0]
    if T < 2:
        return math.nan
    drops = [R[j : T - 1, j].max() - R[T - 1, j] for j in range(T - 1)]
    return float(torch.stack(drops).mean())


def summarize(R: torch.Tensor, b: torch.Tensor | Sequence[float] | None = None) -> dict[str, float]:
    """Every metric above, keyed by name; forward transfer only when ``b`` is given."""
    metrics = {
        "final_average_accuracy": final_average_accuracy(R),
        "average_incremental_accuracy": average_incremental_accuracy(R),
        "backward_transfer": backward_transfer(R),
        "forgetting": forgetting(R),
    }
    if b is not None:
        metrics["forward_transfer"] = forward_transfer(R, b)
    return metrics


def task_masked_logits(logits: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Logits with every class outside ``classes`` set to -inf: the argmax is then the task-aware prediction."""
    if len(classes) == 0:
        raise ValueError("a task must have at least one class")
    keep = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    index = torch.as_tensor(list(classes), dtype=torch.long, device=logits.device)
    if index.min() < 0 or index.max() >= logits.shape[-1]:
        raise ValueError(f"task classes must lie in [0, {logits.shape[-1]}), got {list(classes)}")
    keep[index] = True
    return logits.masked_fill(~keep, -math.inf)


def correct_counts(logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[int]) -> tuple[int, int]:
    """(task-agnostic correct, task-aware correct) predictions of a batch from one task with these classes."""
    agnostic = int((logits.argmax(-1) == labels).sum())
    aware = int((task_masked_logits(logits, classes).argmax(-1) == labels).sum())
    return agnostic, aware


class AccuracyMatrix:
    """R[i, j], filled row by row as tasks end; NaN where not evaluated yet. Also holds b (random-init accuracies)."""

    def __init__(self, num_tasks: int):
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        self.num_tasks = int(num_tasks)
        self.values = torch.full((num_tasks, num_tasks), math.nan, dtype=torch.float64)
        self.random_init: torch.Tensor | None = None

    def set_row(self, trained: int, accuracies: Sequence[float] | torch.Tensor) -> None:
        row = torch.as_tensor(accuracies, dtype=torch.float64)
        if row.shape != (self.num_tasks,):
            raise ValueError(f"a row holds one accuracy per task ({self.num_tasks}), got shape {tuple(row.shape)}")
        if not 0 <= trained < self.num_tasks:
            raise IndexError(f"task index {trained} outside [0, {self.num_tasks})")
        self.values[trained] = row

    def set_random_init(self, accuracies: Sequence[float] | torch.Tensor) -> None:
        b = torch.as_tensor(accuracies, dtype=torch.float64)
        if b.shape != (self.num_tasks,):
            raise ValueError(f"b holds one accuracy per task ({self.num_tasks}), got shape {tuple(b.shape)}")
        self.random_init = b

    @property
    def complete(self) -> bool:
        return not torch.isnan(self.values).any()

    def summary(self) -> dict[str, float]:
        return summarize(self.values, self.random_init)

    def state_dict(self) -> dict:
        return {"values": self.values.clone(), "random_init": None if self.random_init is None else self.random_init.clone()}

    def load_state_dict(self, state: dict) -> None:
        values = torch.as_tensor(state["values"], dtype=torch.float64)
        if values.shape != self.values.shape:
            raise ValueError(f"saved accuracy matrix has shape {tuple(values.shape)}, this stream {tuple(self.values.shape)}")
        self.values = values.clone()
        self.random_init = None if state.get("random_init") is None else torch.as_tensor(state["random_init"], dtype=torch.float64)
