"""Fills an experience buffer with the examples a run trains on: their codes (recollections), images, or both.

``when="last_epoch"``: the examples of the final training epoch (one pass over the training set: the paper's
Table 1 buffer). ``when="stream"``: every batch as it arrives (continual learning; the reservoir keeps a uniform
sample of the stream). Each batch is encoded with ``pl_module.encode`` right after the model has trained on it,
without gradients and in eval mode, together with its labels and task ids (task 0 when the batch has none).

The buffer travels in every Lightning checkpoint (``state_dict``) and is restored bit for bit on resume: contents,
stream position and both random generators. If a fit ends with the buffer still empty (it started from a
finished checkpoint, so no epoch ran, or max_steps / early stopping ended it before its last epoch) the
training loader is encoded once more with the final weights, so that a researcher resuming a finished run gets
the buffer they asked for. Under DDP each rank fills its own buffer from its own shard; checkpoints hold
every rank's buffer, and resuming needs the same number of processes.

Seeds under DDP: every process builds the same buffer from the same config, so with the same seed. At ``setup``
the writer gives rank r's buffer the seed ``seed + r`` (``buffer.reseed``; ``seed`` is the buffer's seed when the
writer was built), so that the ranks' reservoirs, and their replay and nearest-neighbour draws, are independent.
Rank 0 keeps ``seed`` itself, so a single-process run is unchanged. A checkpoint restores each rank's own
generators afterwards (Lightning restores callbacks after ``setup``).

An episodic memory instead of a buffer (``memory=``, any ``lossy_memory.memory.EpisodicMemory``: lossless images,
recollections or both, under its bit budget) makes the writer the storage half of rehearsal for any LightningModule
(the ``ReplayInterleaving`` callback is the other half): every incoming batch (``when="stream"``) is offered to the
memory, which encodes it with its own codec; with a recollection memory, the memory's online generator first makes
``generator_steps`` updates on the batch and its own recollections (``OnlineGenerator.update``, the continual
learner's update too). Rows a ``ReplayInterleaving`` mixed in (``batch["replayed"]``) are never stored. The memory
is built at ``setup`` from the datamodule's image shape, classes and tasks; it and the generator's optimizer travel
in checkpoints. One process only: its bit budget is the run's.

Logged at the end of each training epoch and of fit: ``buffer/bits_used`` (what the stored items really occupy:
packed codes, labels and task ids) and ``buffer/items``, summed over ranks, and ``buffer/bits_with_generator``
(the same plus the generator's parameter bits: the paper's total constraint, eq. 6) when the module reports them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lossy_memory.memory.replay import evaluating
from lossy_memory.memory import EpisodicMemory, ExperienceBuffer, LosslessBuffer, MixedBuffer

WHEN = ("last_epoch", "stream")


class RecollectionWriter(L.Callback):
    """Writes the training examples of the last epoch, or of every batch, into ``buffer`` or ``memory`` (exactly one;
    see the module docstring). ``generator_steps``: a recollection memory's generator updates per incoming batch."""

    def __init__(self, buffer: ExperienceBuffer | None = None, when: str = "last_epoch", memory: EpisodicMemory | None = None,
                 generator_steps: int = 1):
        if (buffer is None) == (memory is None):
            raise ValueError("give the RecollectionWriter either a buffer (filled with the model's own encode) or an episodic "
                             "memory (encoded by its own codec), not both or neither")
        if buffer is not None and not isinstance(buffer, ExperienceBuffer):
            raise ValueError(f"buffer must be an ExperienceBuffer (lossy_memory.memory), got {type(buffer).__name__}")
        if memory is not None and not isinstance(memory, EpisodicMemory):
            raise ValueError(f"memory must be an EpisodicMemory (conf/memory), got {type(memory).__name__}")
        if when not in WHEN:
            raise ValueError(f"when must be one of {WHEN}, got {when!r}")
        if memory is not None and when != "stream":
            raise ValueError(f"an episodic memory keeps a sample of the stream: use when=stream, got {when!r}")
        if isinstance(generator_steps, bool) or int(generator_steps) != generator_steps or generator_steps < 0:
            raise ValueError(f"generator_steps must be an integer >= 0, got {generator_steps!r}")
        self.buffer, self.memory, self.when = buffer, memory, when
        self.generator_steps = int(generator_steps)
        self.generator_optimizer: torch.optim.Optimizer | None = None
        self._optimizer_state: dict[str, Any] | None = None  # from a checkpoint, loaded once the optimizer exists
        self.seed: int | None = getattr(buffer, "seed", None)  # rank r's buffer runs on seed + r
        self._shared = False  # whether the buffer has been cut to this process's share of the budget

    @property
    def trains_generator(self) -> bool:
        return self.memory is not None and self.memory.online is not None and self.generator_steps > 0

    # -- writing ------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.memory is not None:
            self.build_memory(trainer, pl_module)
            return
        self.seed_for_rank(trainer.global_rank)
        if trainer.world_size > 1 and not self._shared:  # the budget is the run's: each process keeps its share
            self.buffer.share(trainer.world_size)
            self._shared = True
        if stage == "fit" and not isinstance(self.buffer, LosslessBuffer) and not callable(getattr(pl_module, "encode", None)):
            raise ValueError(f"{type(self.buffer).__name__} stores codes, but {type(pl_module).__name__} has no encode(x) -> codes")

    def build_memory(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Size the memory for the run's data (once): image shape, classes and tasks from the datamodule."""
        if trainer.world_size > 1:
            raise ValueError(f"an episodic memory's bit budget is the run's, and {trainer.world_size} processes would each keep "
                             "one: write it from one process (trainer.devices=1)")
        if self.memory.image_shape is not None:
            return
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "image_shape") or not hasattr(datamodule, "num_classes"):
            raise ValueError("RecollectionWriter(memory=...) sizes the memory from the datamodule's image_shape and num_classes: "
                             f"{type(datamodule).__name__} has neither (use a lossy_memory datamodule)")
        self.memory.build(datamodule.image_shape, datamodule.num_classes, getattr(datamodule, "num_tasks", 1), who="RecollectionWriter")

    def seed_for_rank(self, rank: int) -> None:
        """Reseed the buffer with ``seed + rank`` unless it already runs on that seed (so only once per process:
        a later ``setup``, e.g. for testing after fitting, leaves its generators where they are)."""
        if self.seed is not None and self.buffer.seed != self.seed + rank:
            self.buffer.reseed(self.seed + rank)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.memory is None:
            return
        self.memory.to(pl_module.device)  # the generator
        self.memory.place(pl_module.device)  # the stores, unless memory.device pins them
        if self.trains_generator and self.generator_optimizer is None:
            self.generator_optimizer = self.memory.online.make_optimizer()
            if self._optimizer_state is not None:
                self.generator_optimizer.load_state_dict(self._optimizer_state)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Mapping[str, torch.Tensor],
                           batch_idx: int) -> None:
        if self.when == "stream" or is_last_epoch(trainer):
            self.write(pl_module, batch)

    def write(self, pl_module: L.LightningModule, batch: Mapping[str, torch.Tensor]) -> None:
        """Offer one batch ``{"x": images in [0, 1], "y": labels[, "task": task ids]}`` to the buffer or memory."""
        if self.memory is not None:
            self.write_memory(batch)
            return
        x = batch["x"]
        if isinstance(self.buffer, LosslessBuffer):
            items: Any = x
        else:
            with evaluating(pl_module):
                codes = pl_module.encode(x)
            items = (x, codes) if isinstance(self.buffer, MixedBuffer) else codes
        self.buffer.add(items, batch["y"], batch.get("task", 0))

    def write_memory(self, batch: Mapping[str, torch.Tensor]) -> None:
        """The incoming rows of a batch of one task: the generator's update(s) on them, then the offer to the memory."""
        x, y, tasks = batch["x"], batch["y"], batch.get("task")
        if "replayed" in batch:  # a ReplayInterleaving mixed recollections in: only the incoming rows are new experience
            incoming = ~batch["replayed"]
            x, y, tasks = x[incoming], y[incoming], None if tasks is None else tasks[incoming]
        task = 0 if tasks is None else int(tasks[0])
        if tasks is not None and (tasks != task).any():
            raise ValueError("a batch holds examples of two tasks: a memory is written one task at a time")
        memory = self.memory
        if self.trains_generator:
            memory.online.update(x, memory.draw if len(memory) else None, self.generator_optimizer, torch.Tensor.backward,
                                 self.generator_steps)
        memory.add(x, y, task)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.log_usage(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.memory is None and len(self.buffer) == 0:
            self.fill_from_training_set(trainer, pl_module)
            self.log_usage(trainer, pl_module)

    def fill_from_training_set(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Encode the training loader (as many batches as an epoch has) with the current weights, on the run's device.

        Called at the end of fit, after Lightning has moved the module to the CPU; it is moved to the accelerator
        for the pass and back afterwards.
        """
        loader = trainer.train_dataloader
        batches = trainer.num_training_batches
        if loader is None or batches == 0:
            rank_zero_warn("RecollectionWriter: the buffer is empty and there is no training batch to fill it with")
            return
        rank_zero_info("RecollectionWriter: no training epoch filled the buffer (resumed from a finished run, or stopped "
                       "before the last epoch); writing the training set's codes with the final weights")
        device, was = trainer.strategy.root_device, pl_module.device
        pl_module.to(device)
        try:
            for batch in itertools.islice(loader, None if math.isinf(batches) else int(batches)):
                self.write(pl_module, trainer.strategy.batch_to_device(batch, device))
        finally:
            pl_module.to(was)

    def log_usage(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Log the exact bits and items held, summed over ranks (integers, straight to the loggers)."""
        store = self.buffer if self.memory is None else self.memory
        usage = torch.tensor([store.bits_used(), len(store)], dtype=torch.int64, device=trainer.strategy.root_device)
        bits, items = (int(v) for v in trainer.strategy.reduce(usage, reduce_op="sum"))
        metrics = {"buffer/bits_used": bits, "buffer/items": items}
        if self.memory is not None and self.memory.generator is not None:
            metrics["buffer/bits_with_generator"] = bits + self.memory.generator_bits()
        elif hasattr(pl_module, "storage_report"):
            metrics["buffer/bits_with_generator"] = bits + int(pl_module.storage_report()["parameter_bits"])
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            logger.save()

    # -- checkpoints ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Every rank's buffer state (gathered under DDP: each rank holds its own shard's reservoir); or the memory
        (stores and generator) and the generator's optimizer."""
        if self.memory is not None:
            return {"memory": self.memory.state_dict(),
                    "generator_optimizer": None if self.generator_optimizer is None else self.generator_optimizer.state_dict()}
        state = self.buffer.state_dict()
        world, _ = _world()
        if world == 1:
            return {"ranks": [state]}
        states: list[Any] = [None] * world
        dist.all_gather_object(states, state)
        return {"ranks": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.memory is not None:
            if not isinstance(state_dict, dict) or "memory" not in state_dict:
                raise ValueError("the checkpoint's RecollectionWriter kept a buffer, not an episodic memory: resume with the "
                                 "callbacks it was written with")
            self.memory.load_state_dict(state_dict["memory"])
            self._optimizer_state = state_dict["generator_optimizer"]
            return
        states = state_dict.get("ranks") if isinstance(state_dict, dict) else None
        if not isinstance(states, list) or not states:
            raise ValueError("not a RecollectionWriter state (it needs 'ranks': one buffer state per process)")
        world, rank = _world()
        if len(states) != world:
            raise ValueError(f"the checkpoint holds the buffers of {len(states)} processes but this run has {world}: "
                             "resume with as many processes")
        self.buffer.load_state_dict(states[rank])


def is_last_epoch(trainer: L.Trainer) -> bool:
    """Whether the running epoch is the final one max_epochs allows (never, when max_epochs is unlimited)."""
    max_epochs = trainer.max_epochs
    return max_epochs is not None and max_epochs >= 0 and trainer.current_epoch == max_epochs - 1


def find_writer(trainer: L.Trainer) -> RecollectionWriter:
    """The run's one RecollectionWriter: how other callbacks and models reach the buffer it fills."""
    writers = [c for c in trainer.callbacks if isinstance(c, RecollectionWriter)]
    if len(writers) != 1:
        raise ValueError(f"expected exactly one RecollectionWriter among the trainer's callbacks (e.g. callbacks=recollection), "
                         f"found {len(writers)}")
    return writers[0]


def _world() -> tuple[int, int]:
    """(world size, rank) of the default process group, (1, 0) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0
