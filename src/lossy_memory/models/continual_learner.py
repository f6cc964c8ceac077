"""Continual learning on a task stream: a classifier from the zoo trained in one pass, one strategy deciding each update.

The stream (``lossy_memory.data.streams``) hands batches of one task at a time, in task order. Every incoming batch
goes to the lean step (``strategies.ContinualStep``, the one copy of a step, shared with the benchmark and the
tests): with a recollection (or mixed) memory the DiscreteVAE's update on the incoming images interleaved with its own
recollections, then the strategy (fine-tuning, experience replay over lossless images or recollections, GEM, A-GEM,
DER++, iCaRL), which makes its N updates through this module's optimizers (``automatic_optimization = False``).
This module only wires the pieces: the step, task boundaries, evaluation and results. Training losses are logged
every ``trainer.log_every_n_steps`` incoming batches, as tensors (no host-device synchronisation in between).

Evaluation is the ``ContinualEvaluator``'s (``lossy_memory.metrics.continual_evaluation``), which this module calls
before any training (b: the randomly initialised model's accuracies, for forward transfer), after every incoming
batch (long-term retention) and at every task boundary (the first batch of the next task, and the end of the pass),
right after the strategy's ``after_task``: row i of the accuracy matrix R (task-agnostic: argmax over every class;
task-aware: over the task's classes) and, with a generator, its distortion on every task's test set seen so far (at
most ``eval_max_examples`` per task; the paper's Figure 3). At the end of the pass its metrics (over the tasks
trained, should the pass be cut short), wall time, peak memory and the bits stored (memory, and memory + generator
parameters: the paper's total constraint) are logged as ``cl/...`` and written to the run directory by
``lossy_memory.writers.write_continual_results`` (``continual.json``, ``accuracy_matrix*.csv/png``, ``retention.csv``).
A stream that names a ``retention_task`` (``data.LongTermRetentionStream``) and a ``retention_interval`` gets the
retention curve of the paper's Figure 4.

Resuming mid-stream (``ckpt_path`` of a checkpoint taken every ``callbacks.model_checkpoint.every_n_train_steps``):
checkpoints carry, besides the weights of the classifier and the generator and both optimizers' states, the memory
(stores, their RNGs, the generator's snapshot), the strategy's state, the evaluator's (R, curves), the stream position
(incoming batches trained) and the global RNG states (torch, CUDA, Python, NumPy: the Gumbel-softmax noise). The
stream's loader is stateful (``data.streams.StreamLoader``: Lightning saves the loads it handed out and the resumed
pass starts after them), and the global RNG states are put back just before the first resumed update, so the run
continues exactly as it would have.
"""

from __future__ import annotations

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

from lossy_memory.memory import EpisodicMemory
from lossy_memory.memory.replay import evaluating
from lossy_memory.metrics.continual import correct_counts
from lossy_memory.metrics.continual_evaluation import ContinualEvaluator
from lossy_memory.nets import Classifier
from lossy_memory.strategies import ContinualStep, ContinualStrategy
from lossy_memory.writers import write_continual_results


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
        self._plain = False  # plain 32-bit precision on one device (set at fit start)
        self._stored: tuple[int, int] | None = None  # (bits, items) of every process's memory, counted at the end
        self.evaluator: ContinualEvaluator | None = None  # made at setup, once the stream is known
        self.results: dict[str, Any] = {}
        self._start_time: float | None = None
        self.stream_position = 0  # incoming batches trained so far
        self._rng_to_restore: dict[str, Any] | None = None
        self.examples_seen = 0  # incoming examples trained so far

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
        if self.evaluator is not None:
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
        self.step.prepare(self.net, self.image_shape, self.num_classes, self.task_classes, datamodule.task_train_set,
                          ranks=self.trainer.world_size)
        self.evaluator = ContinualEvaluator(self.task_classes, self.task_test_batches, getattr(datamodule, "retention_task", None),
                                            getattr(datamodule, "retention_interval", None))

    def on_fit_start(self) -> None:
        # Lightning's manual_backward and optimizer wrapper add precision scaling, DDP's preparation and hooks; with plain
        # 32-bit precision on one device none applies, and plain calls save a tenth of a small network's step
        self._plain = type(self.trainer.precision_plugin) is Precision and isinstance(self.trainer.strategy, SingleDeviceStrategy)
        self.step.use_backward(torch.Tensor.backward if self._plain else self.manual_backward)
        if self.memory is not None:
            self.memory.place(self.device)

    def configure_optimizers(self):
        return self.step.optimizers(self.optimizer_factory)

    def on_train_start(self) -> None:
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        self.step.use_optimizers([CountedOptimizer(o) for o in optimizers] if self._plain else optimizers)
        self.log_now(self.evaluator.start(self.predict_for_evaluation, self.reconstruct_for_evaluation))
        self._start_time = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    # -- the stream -------------------------------------------------------------------------------------------------
    def training_step(self, load: dict[str, torch.Tensor], load_idx: int) -> None:
        """One load of the stream: ``data.batches_per_step`` incoming batches of one task, trained one after another."""
        if self._rng_to_restore is not None:  # the first update after resuming draws the noise the uninterrupted run drew
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None
        task = load["task_id"]  # read on the host by the stream's loader
        if task != self.current_task:
            if task < self.current_task:
                raise ValueError(f"task {task} came after task {self.current_task}: a stream runs its tasks in order")
            if self.current_task >= 0:
                self.end_task(self.current_task)
            self.current_task = task
            self.step.begin_task(task)
        size = self.trainer.datamodule.batch_size
        for start in range(0, len(load["task"]), size):
            batch = {key: value[start : start + size] for key, value in load.items() if key != "task_id"}
            logs, n = self.step(batch), len(batch["task"])
            self.stream_position += 1
            self.examples_seen += n
            self.log_now(self.evaluator.trained(task, n, self.predict_for_evaluation))
            if self.stream_position % self.trainer.log_every_n_steps == 0:
                self.log_now({f"train/{k}": float(v) for k, v in logs.items()})

    def log_now(self, metrics: dict[str, float]) -> None:
        """Straight to the loggers at the stream position: Lightning's per-step collection costs more than the step,
        and task boundaries are also reached from on_train_epoch_end."""
        if metrics:
            for logger in self.loggers:
                logger.log_metrics(metrics, step=self.stream_position)

    def end_task(self, task: int) -> None:
        self.step.end_task(task)
        self.log_now(self.evaluator.end_task(task, self.predict_for_evaluation, self.reconstruct_for_evaluation, self.examples_seen))

    def on_train_epoch_end(self) -> None:
        if self.current_task >= 0 and self.evaluator.tasks_done <= self.current_task:
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

    def predict_for_evaluation(self, x: torch.Tensor) -> torch.Tensor:
        with evaluating(self.net):
            return self.strategy.predict(x)

    @property
    def reconstruct_for_evaluation(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        if self.generator is None:
            return None

        def reconstruct(x: torch.Tensor) -> torch.Tensor:
            with evaluating(self.generator):
                return self.generator.reconstruct(x)

        return reconstruct

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
        """The run's storage: under DDP, every process's memory summed (as the last ``count_stored`` found it)."""
        memory_bits, items = self._stored if self._stored is not None else self.count_stored(reduce=False)
        generator_bits = 0 if self.memory is None else self.memory.generator_bits()
        report = {"memory_bits": memory_bits, "generator_parameter_bits": generator_bits,
                  "total_bits": memory_bits + generator_bits, "memory_items": items}
        if self.memory is not None and self.memory.image_shape is not None:
            report["budget_bits"] = self.memory.run_budget_bits
        if self.generator is not None:  # the latent the budget was sized to (or was given): what an item holds
            report.update(latent_c=self.generator.latent.c, latent_l=self.generator.latent.l, item_bits=self.memory.item_bits)
        return report

    def count_stored(self, reduce: bool = True) -> tuple[int, int]:
        """(bits, items) stored, summed over the processes when ``reduce`` (a collective: every process calls it)."""
        local = (0, 0) if self.memory is None else (self.memory.bits_used(), len(self.memory))
        if not reduce or self.trainer.world_size == 1:
            return local
        total = self.trainer.strategy.reduce(torch.tensor(local, dtype=torch.int64, device=self.device), reduce_op="sum")
        return int(total[0]), int(total[1])

    def finish(self) -> None:
        self._stored = self.count_stored()  # every process is here: the run's storage, summed once
        results: dict[str, Any] = {**self.evaluator.metrics(), "examples_seen": self.examples_seen}
        results["wall_time_s"] = time.perf_counter() - (self._start_time or time.perf_counter())
        results["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if torch.cuda.is_available():
            results["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
        results.update({f"storage_{k}": float(v) for k, v in self.storage_report().items()})
        self.results = results
        # the same on every process (R from the whole test sets, storage summed): sync_dist averages equal values
        self.log_dict({f"cl/{k}": float(v) for k, v in results.items() if not math.isnan(float(v))}, on_epoch=True, batch_size=1,
                      sync_dist=True)
        if self.trainer.is_global_zero:
            record = {**self.evaluator.record(results), "setting": self.setting()}
            write_continual_results(self.output_dir or Path(self.trainer.default_root_dir), record, self.loggers)

    def setting(self) -> dict[str, str]:
        """What the run compares, in words (plot titles, summaries)."""
        memory = "no memory" if self.memory is None else (
            f"{self.memory.kind} memory, {self.storage_report()['memory_items']:,} items in {self.memory.run_budget_bits:,.0f} bits"
            + ("" if self.generator is None else f" (c={self.generator.latent.c}, l={self.generator.latent.l})"))
        return {"strategy": type(self.strategy).__name__, "memory": memory}

    # -- checkpoints ----------------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["continual"] = {"current_task": self.current_task, "strategy": self.strategy.state_dict(),
                                   "evaluator": self.evaluator.state_dict(), "stream_position": self.stream_position,
                                   "examples_seen": self.examples_seen, "rng": rng_states()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("continual")
        if state is None:
            return
        if "evaluator" not in state:
            raise ValueError("this checkpoint was written by an older ContinualLearner (no evaluator state): it cannot resume "
                             "here; start the run again")
        self.current_task = state["current_task"]
        self.strategy.load_state_dict(state["strategy"])
        self.evaluator.load_state_dict(state["evaluator"])
        self.stream_position = int(state["stream_position"])
        self.examples_seen = int(state["examples_seen"])
        self._rng_to_restore = state["rng"]


class CountedOptimizer:
    """The torch optimizer inside a ``LightningOptimizer``, stepped directly, each step still counted in
    ``trainer.global_step`` (what checkpoints every ``every_n_train_steps`` count) as Lightning's manual loop counts
    it. For plain 32-bit precision on one device, where Lightning's wrapper adds nothing but hooks and a closure."""

    def __init__(self, wrapped: Any):
        self.wrapped, self.optimizer = wrapped, wrapped.optimizer

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.wrapped._on_before_step()
        self.optimizer.step()
        self.wrapped._on_after_step()

    def __getattr__(self, name: str) -> Any:  # param_groups, state, ...
        return getattr(self.optimizer, name)


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
