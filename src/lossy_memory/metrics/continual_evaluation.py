"""The evaluator of a continual-learning run: what is measured at task boundaries, kept apart from training.

``ContinualEvaluator`` holds the run's accuracy matrices R (task-agnostic and task-aware) with b, the accuracies of
the randomly initialised model (for forward transfer), the generator's distortion curve (mean |x - x_hat| per pixel
on the test sets of the tasks seen, against incoming examples trained: the paper's Figure 3) and the long-term
retention curve (Figure 4: during a retention phase, the task-agnostic accuracy averaged over the tasks before it,
every ``retention_interval`` incoming examples). The learner calls it at the start of the stream, after each incoming
batch and at each task boundary, and writes what ``record`` returns (``lossy_memory.writers.write_continual_results``).

It knows nothing of Lightning or strategies: it is given ``test_batches(task)`` ((x in [0, 1], y) batches of a task's
test set on the device) and, at each call, ``predict`` (images -> logits over every class) and ``reconstruct``
(images -> the generator's reconstructions; None without a generator), already in evaluation mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from lossy_memory.metrics.continual import AccuracyMatrix, correct_counts, summarize

Batches = Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]]
Predict = Callable[[torch.Tensor], torch.Tensor]


class ContinualEvaluator:
    """See the module docstring. ``task_classes[t]``: task t's classes (the task-aware prediction keeps only those)."""

    def __init__(self, task_classes: Sequence[Sequence[int]], test_batches: Batches, retention_task: int | None = None,
                 retention_interval: int | None = None):
        num_tasks = len(task_classes)
        if retention_task is not None and (retention_interval is None or retention_interval < 1 or not 0 < retention_task < num_tasks):
            raise ValueError(f"a retention stream needs a retention_interval >= 1 and a retention task after the first, got "
                             f"{retention_interval} and task {retention_task} of {num_tasks}")
        self.task_classes = [tuple(c) for c in task_classes]
        self.test_batches = test_batches
        self.retention_task, self.retention_interval = retention_task, retention_interval
        self.matrices = {"agnostic": AccuracyMatrix(num_tasks), "aware": AccuracyMatrix(num_tasks)}
        self.tasks_done = 0
        self.generator_curve: list[tuple[int, float]] = []  # (examples seen, generator distortion on the tasks seen)
        self.retention_seen = 0  # incoming examples of the retention phase trained so far
        self.retention_initial: float | None = None
        self.retention_curve: list[tuple[int, float]] = []  # (retention-phase examples, accuracy on the earlier tasks)

    # -- measurements ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def accuracies(self, predict: Predict, tasks: Iterable[int] | None = None) -> tuple[list[float], list[float]]:
        """(task-agnostic, task-aware) accuracy on every task's test set (those of ``tasks``)."""
        agnostic, aware = [], []
        for j in range(len(self.task_classes)) if tasks is None else tasks:
            hits, count = [0, 0], 0
            for x, y in self.test_batches(j):
                for k, n in enumerate(correct_counts(predict(x), y, self.task_classes[j])):
                    hits[k] += n
                count += len(y)
            agnostic.append(hits[0] / count)
            aware.append(hits[1] / count)
        return agnostic, aware

    @torch.no_grad()
    def distortion(self, reconstruct: Predict, tasks: Iterable[int]) -> float:
        """Mean per-pixel |x - x_hat| of the reconstructions over the test sets of ``tasks``."""
        total, pixels = 0.0, 0
        for j in tasks:
            for x, _ in self.test_batches(j):
                total += float((reconstruct(x) - x).abs().sum())
                pixels += x.numel()
        return total / max(pixels, 1)

    # -- the stream's events --------------------------------------------------------------------------------------
    def start(self, predict: Predict, reconstruct: Predict | None) -> dict[str, float]:
        """Before any training (once: a resumed run keeps its b): b, and the generator's starting distortion on the
        first task. Returns what to log."""
        if self.matrices["agnostic"].random_init is not None:
            return {}
        agnostic, aware = self.accuracies(predict)
        self.matrices["agnostic"].set_random_init(agnostic)
        self.matrices["aware"].set_random_init(aware)
        return self._generator_point(reconstruct, range(1), 0)

    def _generator_point(self, reconstruct: Predict | None, tasks: Iterable[int], examples_seen: int) -> dict[str, float]:
        if reconstruct is None:
            return {}
        value = self.distortion(reconstruct, tasks)
        self.generator_curve.append((examples_seen, value))
        return {"cl/generator_distortion": value, "cl/examples_seen": float(examples_seen)}

    def end_task(self, task: int, predict: Predict, reconstruct: Predict | None, examples_seen: int) -> dict[str, float]:
        """Task ``task`` is finished: row ``task`` of R (and the generator's distortion on the tasks seen)."""
        logs = self._generator_point(reconstruct, range(task + 1), examples_seen)
        agnostic, aware = self.accuracies(predict)
        if self.retention_task is not None and task == self.retention_task - 1:
            self.retention_initial = sum(agnostic[: self.retention_task]) / self.retention_task
        self.matrices["agnostic"].set_row(task, agnostic)
        self.matrices["aware"].set_row(task, aware)
        self.tasks_done = task + 1
        seen = agnostic[: task + 1]
        return {**logs, "cl/seen_tasks_accuracy": sum(seen) / len(seen), "cl/tasks_done": float(task + 1),
                **{f"cl/after_task/task{j}_accuracy": a for j, a in enumerate(agnostic)}}

    def trained(self, task: int, n: int, predict: Predict) -> dict[str, float]:
        """n more incoming examples of ``task`` trained: in the retention phase, one curve point per
        ``retention_interval`` mark crossed (measured once, now)."""
        if task != self.retention_task:
            return {}
        before, self.retention_seen = self.retention_seen, self.retention_seen + n
        marks = self.retention_seen // self.retention_interval - before // self.retention_interval
        if marks <= 0:
            return {}
        agnostic, _ = self.accuracies(predict, tasks=range(self.retention_task))
        value = sum(agnostic) / len(agnostic)
        first = before // self.retention_interval + 1
        self.retention_curve += [(k * self.retention_interval, value) for k in range(first, first + marks)]
        return {"cl/retention": value, "cl/retention_examples": float(self.retention_seen)}

    # -- results ---------------------------------------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        """The metrics of ``lossy_memory.metrics.continual`` over the tasks finished, task-agnostic and (prefixed
        ``task_aware_``) task-aware; the last generator distortion; retention. A stream cut short (``finished`` false)
        has no final average accuracy: ``seen_tasks_accuracy`` is the mean over the tasks it trained instead."""
        done, num_tasks = self.tasks_done, len(self.task_classes)
        results: dict[str, Any] = {"tasks_trained": done, "num_tasks": num_tasks, "finished": done == num_tasks}
        for name, matrix in self.matrices.items():
            b = None if matrix.random_init is None else matrix.random_init[:done]
            prefix = "" if name == "agnostic" else "task_aware_"
            summary = summarize(matrix.values[:done, :done], b) if done else {}
            if done and done < num_tasks:
                summary["seen_tasks_accuracy"] = summary.pop("final_average_accuracy")
            results.update({f"{prefix}{k}": v for k, v in summary.items()})
        if self.generator_curve:
            results["generator_distortion"] = self.generator_curve[-1][1]
        if self.retention_task is not None:
            results["retention_initial"] = math.nan if self.retention_initial is None else self.retention_initial
            results["retention_final"] = self.retention_curve[-1][1] if self.retention_curve else math.nan
        return results

    def record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """What ``continual.json`` holds: ``metrics`` (the run's, these included), R and b of both kinds, the curves."""
        record: dict[str, Any] = {"metrics": metrics, "task_classes": [list(c) for c in self.task_classes]}
        for name, matrix in self.matrices.items():
            suffix = "" if name == "agnostic" else "_task_aware"
            record[f"accuracy_matrix{suffix}"] = [[None if math.isnan(v) else v for v in row] for row in matrix.values.tolist()]
            record[f"random_init_accuracy{suffix}"] = None if matrix.random_init is None else matrix.random_init.tolist()
        if self.generator_curve:
            record["generator_distortion"] = {"examples": [e for e, _ in self.generator_curve],
                                              "distortion": [v for _, v in self.generator_curve]}
        if self.retention_task is not None:
            record["retention"] = {"interval": self.retention_interval, "task": self.retention_task,
                                   "earlier_tasks": self.retention_task, "initial": self.retention_initial,
                                   "examples": [e for e, _ in self.retention_curve],
                                   "accuracy": [v for _, v in self.retention_curve]}
        return record

    # -- checkpoints -------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"matrices": {k: m.state_dict() for k, m in self.matrices.items()}, "tasks_done": self.tasks_done,
                "generator_curve": self.generator_curve,
                "retention": {"seen": self.retention_seen, "initial": self.retention_initial, "curve": self.retention_curve}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, m in self.matrices.items():
            m.load_state_dict(state["matrices"][k])
        self.tasks_done = int(state["tasks_done"])
        self.generator_curve = [tuple(p) for p in state["generator_curve"]]
        retention = state["retention"]
        self.retention_seen, self.retention_initial = int(retention["seen"]), retention["initial"]
        self.retention_curve = [tuple(p) for p in retention["curve"]]
