"""Continual learning on a task stream: a classifier from the zoo trained in one pass, one strategy deciding each update.

The stream (``lossy_memory.data.streams``) hands batches of one task at a time, in task order. Every incoming batch
goes to the lean step (``strategies.ContinualStep``, the one copy of a step, shared with the benchmark and the
tests): with a recollection (or mixed) memory the DiscreteVAE's update on the incoming images interleaved with its own
recollections, then the strategy (fine-tuning, experience replay over lossless images or recollections, GEM, A-GEM,
DER++, iCaRL), which makes its N updates through this module's optimizers (``automatic_optimization = False``).
This module only wires the pieces: the step, task boundaries, evaluation and results. Training losses are logged
every ``trainer.log_every_n_steps`` incoming batches, as tensors (no host-device synchronisation in between).

At every task boundary (the first batch of the next task, and the end of the pass) the strategy's ``after_task``
runs, then every task's test set is evaluated: row i of the accuracy matrix R (task-agnostic: argmax over every
class; task-aware: over the task's classes). Before any training the same evaluation of the randomly initialised
model gives b, for forward transfer. At the end of the pass: the metrics of ``lossy_memory.metrics.continual``
(over the tasks trained, should the pass be cut short), wall time, peak memory and the bits stored (memory, and
memory + generator parameters: the paper's total constraint) are logged as ``cl/...``, and R is written to the run
directory as CSV, JSON and a PNG heatmap (``accuracy_matrix*``, ``continual.json``).

With a generator (recollection / mixed memory), its distortion (mean |x - x_hat| per pixel, on every task's test
set seen so far, at most ``eval_max_examples`` per task) is measured before training and at every task boundary,
against the number of incoming examples trained: the DiscreteVAE curves of the paper's Figure 3 (``generator_distortion``
in ``continual.json``, ``cl/generator_distortion`` in the loggers).

Long-term retention (the paper's Figure 4): a stream that names a ``retention_task`` (``data.LongTermRetentionStream``:
CIFAR-100, then CIFAR-10 for a set number of examples) and a ``retention_interval`` gets, during that last phase, the
task-agnostic accuracy averaged over the tasks before it measured every ``retention_interval`` incoming examples
(``retention`` in ``continual.json``, ``retention.csv``, ``cl/retention``); ``retention_initial`` is the value when the
phase starts, ``retention_final`` at its end.

Resuming mid-stream (``ckpt_path`` of a checkpoint taken every ``callbacks.model_checkpoint.every_n_train_steps``):
checkpoints carry, besides the weights of the classifier and the generator and both optimizers' states, the memory
(stores, their RNGs, the generator's snapshot), the strategy's state, the accuracy matrices, the stream position
(incoming batches trained) and the global RNG states (torch, CUDA, Python, NumPy: the Gumbel-softmax noise).
Lightning restores its batch counter but, for a data loader without ``state_dict``, starts the stream over from
its first batch while still ending the epoch after the stream's length: the learner therefore wraps the stream's
batch sampler (``ResumableBatches``) so that the resumed iteration skips the loads already trained, and puts the
global RNG states back just before the first resumed update; the run then continues exactly as it would have.
"""

from __future__ import annotations

import json
import math
import random
import resource
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from lossy_memory.memory import EpisodicMemory
from lossy_memory.memory.replay import evaluating
from lossy_memory.metrics.continual import AccuracyMatrix, correct_counts, summarize
from lossy_memory.nets import Classifier
from lossy_memory.strategies import ContinualStep, ContinualStrategy


class ContinualLearner(L.LightningModule):
    """See the module docstring. ``classifier``: a partial completed with ``image_shape`` and ``num_classes`` (checked
    against the stream's). ``eval_max_examples``: evaluate on at most this many test examples per task (None: all)."""

    def __init__(
        self,
        classifier: Callable[..., Classifier],
        optimizer: Callable[..., torch.optim.Optimizer],
        strategy: ContinualStrategy,
        image_shape: Sequence[int],
        num_classes: int,
        memory: EpisodicMemory | None = None,
        generator_steps: int = 1,
        eval_batch_size: int = 1000,
        eval_max_examples: int | None = None,
        output_dir: str | None = None,
    ):
        super().__init__()
        if eval_batch_size < 1 or (eval_max_examples is not None and eval_max_examples < 1):
            raise ValueError(f"model.eval_batch_size and model.eval_max_examples must be >= 1, got {eval_batch_size}, {eval_max_examples}")
        self.step = ContinualStep(strategy, memory, generator_steps, backward=self.manual_backward)
        self.automatic_optimization = False
        self.image_shape, self.num_classes = tuple(int(s) for s in image_shape), int(num_classes)
        self.net = classifier(image_shape=self.image_shape, num_classes=self.num_classes)
        self.optimizer_factory = optimizer
        self.memory = self.step.memory
        self.eval_batch_size, self.eval_max_examples = int(eval_batch_size), eval_max_examples
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.task_classes: list[tuple[int, ...]] = []
        self.current_task = -1
        self.tasks_done = 0
        self.matrices: dict[str, AccuracyMatrix] = {}
        self.results: dict[str, Any] = {}
        self._start_time: float | None = None
        self.stream_position = 0  # incoming batches trained so far
        self.loads_trained = 0  # training steps (loads of data.batches_per_step incoming batches) so far
        self._resume_skip = 0  # loads the next iteration of the stream skips (set by on_load_checkpoint)
        self._rng_to_restore: dict[str, Any] | None = None
        self.examples_seen = 0  # incoming examples trained so far
        self.generator_curve: list[tuple[int, float]] = []  # (examples seen, generator distortion on the tasks seen)
        self.retention_task: int | None = None  # set from the stream at setup
        self.retention_interval: int | None = None
        self.retention_seen = 0  # incoming examples of the retention phase trained so far
        self.retention_initial: float | None = None
        self.retention_curve: list[tuple[int, float]] = []  # (retention-phase examples, accuracy on the earlier tasks)

    @property
    def strategy(self) -> ContinualStrategy:
        return self.step.strategy

    @property
    def generator(self):
        return None if self.memory is None else self.memory.generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.strategy.predict(x)

    # -- set-up: every check before any training -------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.matrices:
            return
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if datamodule is None or not hasattr(datamodule, "task_classes"):
            raise ValueError("ContinualLearner trains on a task stream: use a stream datamodule (data=mnist_split, "
                             "mnist_permuted, cifar100_stream, omniglot_stream)")
        datamodule.setup(stage)
        if datamodule.num_classes != self.num_classes:
            raise ValueError(f"model.num_classes={self.num_classes} but the stream {datamodule.name} has "
                             f"{datamodule.num_classes} classes: set model.num_classes={datamodule.num_classes}")
        if tuple(datamodule.image_shape) != self.image_shape:
            raise ValueError(f"model.image_shape={list(self.image_shape)} but the stream's images are {list(datamodule.image_shape)}")
        if stage == "fit" and self.trainer.max_epochs not in (1, None):
            raise ValueError(f"a task stream is seen once: set trainer.max_epochs=1 (got {self.trainer.max_epochs})")
        self.task_classes = [tuple(c) for c in datamodule.task_classes]
        num_tasks = datamodule.num_tasks
        self.step.prepare(self.net, self.image_shape, self.num_classes, self.task_classes, datamodule.task_train_set)
        self.retention_task = getattr(datamodule, "retention_task", None)
        self.retention_interval = getattr(datamodule, "retention_interval", None)
        if self.retention_task is not None and (self.retention_interval is None or self.retention_interval < 1
                                                or not 0 < self.retention_task < num_tasks):
            raise ValueError(f"a retention stream needs a retention_interval >= 1 and a retention task after the first, got "
                             f"{self.retention_interval} and task {self.retention_task} of {num_tasks}")
        self.matrices = {"agnostic": AccuracyMatrix(num_tasks), "aware": AccuracyMatrix(num_tasks)}
        if stage == "fit":
            make_resumable(datamodule, self)

    def on_fit_start(self) -> None:
        # Lightning's manual_backward adds precision scaling and DDP's preparation; with plain 32-bit precision on one
        # device neither applies, and a plain backward saves a tenth of a small network's step
        plain = type(self.trainer.precision_plugin) is Precision and isinstance(self.trainer.strategy, SingleDeviceStrategy)
        self.step.use_backward(torch.Tensor.backward if plain else self.manual_backward)

    def configure_optimizers(self):
        return self.step.optimizers(self.optimizer_factory)

    def on_train_start(self) -> None:
        optimizers = self.optimizers()
        self.step.use_optimizers(optimizers if isinstance(optimizers, list) else [optimizers])
        if self.current_task < 0 and self.matrices["agnostic"].random_init is None:
            agnostic, aware = self.evaluate_tasks()
            self.matrices["agnostic"].set_random_init(agnostic)
            self.matrices["aware"].set_random_init(aware)
            self.record_generator_distortion(tasks=range(1))  # the first task's test set: the generator's starting point
        self._start_time = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    # -- the stream -------------------------------------------------------------------------------------------------
    def training_step(self, load: dict[str, torch.Tensor], load_idx: int) -> None:
        """One load of the stream: ``data.batches_per_step`` incoming batches of one task, trained one after another."""
        if self._rng_to_restore is not None:  # the first update after resuming draws the noise the uninterrupted run drew
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None
        tasks = load["task"]
        task = int(tasks[0])
        if (tasks != task).any():
            raise ValueError("a batch holds examples of two tasks: the stream must not mix tasks within a batch")
        if task != self.current_task:
            if task < self.current_task:
                raise ValueError(f"task {task} came after task {self.current_task}: a stream runs its tasks in order")
            if self.current_task >= 0:
                self.end_task(self.current_task)
            self.current_task = task
            self.step.begin_task(task)
        size = self.trainer.datamodule.batch_size
        for start in range(0, len(tasks), size):
            batch = {key: value[start : start + size] for key, value in load.items()}
            logs = self.step(batch)
            self.stream_position += 1
            self.examples_seen += len(batch["task"])
            if task == self.retention_task:
                self.retention_step(len(batch["task"]))
            if self.stream_position % self.trainer.log_every_n_steps == 0:
                for logger in self.loggers:  # straight to the loggers: Lightning's per-step collection costs more than the step
                    logger.log_metrics({f"train/{k}": float(v) for k, v in logs.items()}, step=self.stream_position)
        self.loads_trained += 1

    def retention_step(self, n: int) -> None:
        """n more retention-phase examples trained: one curve point per ``retention_interval`` mark crossed."""
        before, self.retention_seen = self.retention_seen, self.retention_seen + n
        marks = self.retention_seen // self.retention_interval - before // self.retention_interval
        if marks <= 0:
            return
        agnostic, _ = self.evaluate_tasks(tasks=range(self.retention_task))
        value = sum(agnostic) / len(agnostic)
        first = before // self.retention_interval + 1
        for k in range(first, first + marks):
            self.retention_curve.append((k * self.retention_interval, value))
        for logger in self.loggers:
            logger.log_metrics({"cl/retention": value, "cl/retention_examples": float(self.retention_seen)}, step=self.stream_position)

    def record_generator_distortion(self, tasks: Sequence[int]) -> None:
        if self.generator is None:
            return
        value = self.generator_distortion(tasks)
        self.generator_curve.append((self.examples_seen, value))
        for logger in self.loggers:
            logger.log_metrics({"cl/generator_distortion": value, "cl/examples_seen": float(self.examples_seen)}, step=self.stream_position)

    @torch.no_grad()
    def generator_distortion(self, tasks: Sequence[int]) -> float:
        """Mean per-pixel |x - x_hat| of the generator's reconstructions over the test sets of ``tasks``."""
        total, pixels = 0.0, 0
        with evaluating(self.generator):
            for j in tasks:
                for x, _ in self.task_test_batches(j):
                    total += float((self.generator.reconstruct(x) - x).abs().sum())
                    pixels += x.numel()
        return total / max(pixels, 1)

    def end_task(self, task: int) -> None:
        self.step.end_task(task)
        self.record_generator_distortion(tasks=range(task + 1))
        agnostic, aware = self.evaluate_tasks()
        if self.retention_task is not None and task == self.retention_task - 1:
            self.retention_initial = sum(agnostic[:self.retention_task]) / self.retention_task
        self.matrices["agnostic"].set_row(task, agnostic)
        self.matrices["aware"].set_row(task, aware)
        self.tasks_done = task + 1
        seen = agnostic[: task + 1]
        row = {"cl/seen_tasks_accuracy": sum(seen) / len(seen), "cl/tasks_done": float(task + 1),
               **{f"cl/after_task/task{j}_accuracy": a for j, a in enumerate(agnostic)}}
        for logger in self.loggers:  # straight to the loggers: also called from on_train_epoch_end
            logger.log_metrics(row, step=self.stream_position)

    def on_train_epoch_end(self) -> None:
        if self.current_task >= 0 and self.tasks_done <= self.current_task:
            self.end_task(self.current_task)
        self.finish()

    # -- evaluation ------------------------------------------------------------------------------------------------
    def task_test_batches(self, task: int):
        """(x in [0, 1], y) batches of ``task``'s test set on the device, at most ``eval_max_examples`` of it."""
        data = self.trainer.datamodule.task_test_set(task)
        count = len(data) if self.eval_max_examples is None else min(len(data), self.eval_max_examples)
        for start in range(0, count, self.eval_batch_size):
            stop = min(start + self.eval_batch_size, count)
            yield data.images[start:stop].to(self.device).float() / 255, data.labels[start:stop].to(self.device)

    @torch.no_grad()
    def evaluate_tasks(self, tasks: Sequence[int] | None = None) -> tuple[list[float], list[float]]:
        """(task-agnostic, task-aware) accuracy on every task's test set (those of ``tasks``) with the current model."""
        agnostic, aware = [], []
        with evaluating(self.net):
            for j in range(len(self.task_classes)) if tasks is None else tasks:
                hits, count = [0, 0], 0
                for x, y in self.task_test_batches(j):
                    for k, n in enumerate(correct_counts(self.strategy.predict(x), y, self.task_classes[j])):
                        hits[k] += n
                    count += len(y)
                agnostic.append(hits[0] / count)
                aware.append(hits[1] / count)
        return agnostic, aware

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        accuracy = (self.strategy.predict(batch["x"]).argmax(1) == batch["y"]).float().mean()
        self.log("val/accuracy", accuracy, on_epoch=True, batch_size=len(batch["x"]))

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = self.strategy.predict(batch["x"])
        agnostic, aware = correct_counts(logits, batch["y"], self.task_classes[dataloader_idx])
        n = len(batch["y"])
        split = f"test_task{dataloader_idx}"
        self.log_dict({f"{split}/accuracy": agnostic / n, f"{split}/task_aware_accuracy": aware / n},
                      on_epoch=True, batch_size=n, add_dataloader_idx=False)

    # -- results -----------------------------------------------------------------------------------------------------
    def storage_report(self) -> dict[str, float]:
        memory_bits = 0 if self.memory is None else self.memory.bits_used()
        generator_bits = 0 if self.memory is None else self.memory.generator_bits()
        report = {"memory_bits": memory_bits, "generator_parameter_bits": generator_bits,
                  "total_bits": memory_bits + generator_bits, "memory_items": 0 if self.memory is None else len(self.memory)}
        if self.memory is not None and self.memory.image_shape is not None:
            report["budget_bits"] = self.memory.budget_bits
        return report

    def finish(self) -> None:
        done = self.tasks_done
        results: dict[str, Any] = {"tasks_trained": done, "num_tasks": len(self.task_classes), "examples_seen": self.examples_seen}
        for name, matrix in self.matrices.items():
            b = None if matrix.random_init is None else matrix.random_init[:done]
            metrics = summarize(matrix.values[:done, :done], b) if done else {}
            prefix = "" if name == "agnostic" else "task_aware_"
            results.update({f"{prefix}{k}": v for k, v in metrics.items()})
        results["wall_time_s"] = time.perf_counter() - (self._start_time or time.perf_counter())
        results["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if torch.cuda.is_available():
            results["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
        results.update({f"storage_{k}": float(v) for k, v in self.storage_report().items()})
        if self.generator_curve:
            results["generator_distortion"] = self.generator_curve[-1][1]
        if self.retention_task is not None:
            results["retention_initial"] = float("nan") if self.retention_initial is None else self.retention_initial
            results["retention_final"] = self.retention_curve[-1][1] if self.retention_curve else float("nan")
        self.results = results
        self.log_dict({f"cl/{k}": float(v) for k, v in results.items() if not math.isnan(float(v))}, on_epoch=True, batch_size=1)
        if self.trainer.is_global_zero:
            self.write_results()

    def write_results(self) -> None:
        folder = self.output_dir or Path(self.trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        record = {"metrics": self.results, "task_classes": [list(c) for c in self.task_classes]}
        for name, matrix in self.matrices.items():
            suffix = "" if name == "agnostic" else "_task_aware"
            record[f"accuracy_matrix{suffix}"] = [[None if math.isnan(v) else v for v in row] for row in matrix.values.tolist()]
            record[f"random_init_accuracy{suffix}"] = None if matrix.random_init is None else matrix.random_init.tolist()
            write_matrix_csv(folder / f"accuracy_matrix{suffix}.csv", matrix.values)
            plot_matrix(folder / f"accuracy_matrix{suffix}.png", matrix.values,
                        f"R[i, j] ({'task-agnostic' if not suffix else 'task-aware'}), final avg {self.results.get(('task_aware_' if suffix else '') + 'final_average_accuracy', float('nan')):.3f}")
        if self.generator_curve:
            record["generator_distortion"] = {"examples": [e for e, _ in self.generator_curve],
                                              "distortion": [v for _, v in self.generator_curve]}
        if self.retention_task is not None:
            record["retention"] = {"interval": self.retention_interval, "task": self.retention_task,
                                   "earlier_tasks": self.retention_task, "initial": self.retention_initial,
                                   "examples": [e for e, _ in self.retention_curve],
                                   "accuracy": [v for _, v in self.retention_curve]}
            (folder / "retention.csv").write_text("examples,accuracy\n" + "".join(
                f"{e},{v:.4f}\n" for e, v in ([(0, self.retention_initial)] if self.retention_initial is not None else [])
                + self.retention_curve))
        (folder / "continual.json").write_text(json.dumps(record, indent=2))
        for logger in self.loggers:
            if hasattr(logger, "log_table"):  # W&B
                columns = [f"task {j}" for j in range(len(self.task_classes))]
                logger.log_table("cl/accuracy_matrix", columns=columns, data=self.matrices["agnostic"].values.tolist())
            elif hasattr(getattr(logger, "experiment", None), "add_text"):  # TensorBoard
                logger.experiment.add_text("cl/accuracy_matrix", (folder / "accuracy_matrix.csv").read_text())

    # -- checkpoints ----------------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["continual"] = {"current_task": self.current_task, "tasks_done": self.tasks_done,
                                   "strategy": self.strategy.state_dict(),
                                   "matrices": {k: m.state_dict() for k, m in self.matrices.items()},
                                   "stream_position": self.stream_position, "loads_trained": self.loads_trained,
                                   "rng": rng_states(),
                                   "examples_seen": self.examples_seen, "generator_curve": self.generator_curve,
                                   "retention": {"seen": self.retention_seen, "initial": self.retention_initial,
                                                 "curve": self.retention_curve}}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("continual")
        if state is None:
            return
        self.current_task, self.tasks_done = state["current_task"], state["tasks_done"]
        self.strategy.load_state_dict(state["strategy"])
        for k, m in self.matrices.items():
            m.load_state_dict(state["matrices"][k])
        self.stream_position = int(state.get("stream_position", 0))
        self.loads_trained = self._resume_skip = int(state.get("loads_trained", self.stream_position))
        self._rng_to_restore = state.get("rng")
        self.examples_seen = int(state.get("examples_seen", 0))
        self.generator_curve = [tuple(p) for p in state.get("generator_curve", [])]
        retention = state.get("retention", {})
        self.retention_seen, self.retention_initial = int(retention.get("seen", 0)), retention.get("initial")
        self.retention_curve = [tuple(p) for p in retention.get("curve", [])]


class ResumableBatches(Sampler[list[int]]):
    """A stream's batch sampler whose next iteration skips the ``learner._resume_skip`` loads already trained
    (read when iteration starts: after the checkpoint was loaded). Its length stays the whole stream's, which is
    what Lightning's restored batch counter counts against."""

    def __init__(self, batches: Sampler[list[int]], learner: ContinualLearner):
        self.batches, self.learner = batches, learner

    def __iter__(self):
        skip, self.learner._resume_skip = self.learner._resume_skip, 0
        for i, batch in enumerate(self.batches):
            if i >= skip:
                yield batch

    def __len__(self) -> int:
        return len(self.batches)


def make_resumable(datamodule: L.LightningDataModule, learner: ContinualLearner) -> None:
    """Wrap the stream's ``train_dataloader`` (once) so its loader's batch sampler is a ``ResumableBatches``."""
    make_loader = datamodule.train_dataloader
    if getattr(make_loader, "resumable", False):
        make_loader.learner = learner
        return

    def train_dataloader() -> DataLoader:
        loader = make_loader()
        if loader.batch_sampler is None:
            raise ValueError("a task stream's train loader must use a batch sampler")
        return DataLoader(loader.dataset, batch_sampler=ResumableBatches(loader.batch_sampler, train_dataloader.learner),
                          collate_fn=loader.collate_fn, num_workers=loader.num_workers, pin_memory=loader.pin_memory)

    train_dataloader.resumable, train_dataloader.learner = True, learner
    datamodule.train_dataloader = train_dataloader


def rng_states() -> dict[str, Any]:
    """The global RNG states, in types a ``weights_only`` checkpoint load accepts (NumPy's key as a tensor)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "python": random.getstate(),
              "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def write_matrix_csv(path: Path, values: torch.Tensor) -> None:
    lines = ["trained_through," + ",".join(f"task{j}" for j in range(values.shape[1]))]
    lines += [f"task{i}," + ",".join("" if math.isnan(v) else f"{v:.4f}" for v in row) for i, row in enumerate(values.tolist())]
    path.write_text("\n".join(lines) + "\n")


def plot_matrix(path: Path, values: torch.Tensor, title: str) -> None:
    """A heatmap of R with the values written in (Agg canvas: no GUI backend)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    T = values.shape[0]
    size = min(12.0, 2.0 + 0.45 * T)
    figure = Figure(figsize=(size, size * 0.85), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(values.numpy(), vmin=0, vmax=1, cmap="viridis")
    figure.colorbar(image, ax=axes, label="accuracy")
    for axis in (axes.xaxis, axes.yaxis):
        axis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("evaluated on task j")
    axes.set_ylabel("after training task i")
    axes.set_title(title)
    if T <= 20:
        for i in range(T):
            for j in range(T):
                v = float(values[i, j])
                if not math.isnan(v):
                    axes.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
    figure.savefig(path, dpi=110)
