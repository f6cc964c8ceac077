"""Rehearsal for any LightningModule: replayed items mixed into each incoming batch, by a callback.

A classifier of the user's own (the ``Reasoner``, say) learns a stream with rehearsal when two callbacks sit on its
Trainer: a ``RecollectionWriter`` with an episodic memory (``memory=``: lossless images, recollections or both under
one bit budget), which stores each incoming batch after the update, and this callback, which before the update draws
N mini-batches from that memory, decodes them in one call and hands them to the module with the incoming batch.
Both go through the memory's own API (``EpisodicMemory.replay_batches``: the draw, decode and mixing that the
continual learner's experience replay uses too), so the callbacks and the lean step share one copy.

How the batches reach the module: with automatic optimisation (one update per batch, N must be 1) the incoming
batch dict is extended in place: ``"x"``/``"y"``/``"task"`` gain the replayed rows after the incoming ones and
``"replayed"`` marks them, so an unchanged ``training_step`` trains on both. A module with manual optimisation gets
all N mixed batches as ``batch["replay_batches"]`` and makes one update per batch (the paper's N steps per example).
"""

from __future__ import annotations

from typing import Any

import lightning as L

from lossy_memory.callbacks.recollection_writer import find_writer
from lossy_memory.memory import EpisodicMemory


class ReplayInterleaving(L.Callback):
    """``updates``: N, replayed mini-batches (and so updates) per incoming batch; ``replay_size``: items per replayed
    mini-batch (None: as many as the incoming batch holds). The memory is the run's ``RecollectionWriter``'s."""

    def __init__(self, updates: int = 1, replay_size: int | None = None):
        if isinstance(updates, bool) or int(updates) != updates or updates < 1:
            raise ValueError(f"updates (N, replayed mini-batches per incoming batch) must be an integer >= 1, got {updates!r}")
        if replay_size is not None and (isinstance(replay_size, bool) or int(replay_size) != replay_size or replay_size < 1):
            raise ValueError(f"replay_size (items per replayed mini-batch) must be an integer >= 1 or null, got {replay_size!r}")
        self.updates, self.replay_size = int(updates), None if replay_size is None else int(replay_size)
        self.memory: EpisodicMemory | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        writer = find_writer(trainer)
        if writer.memory is None:
            raise ValueError("ReplayInterleaving replays from an episodic memory: give the RecollectionWriter memory=... "
                             "(conf/memory) instead of a buffer (callbacks=replay does)")
        if self.updates > 1 and pl_module.automatic_optimization:
            raise ValueError(f"ReplayInterleaving(updates={self.updates}): N updates per incoming batch need a module with manual "
                             f"optimisation training on batch['replay_batches']; {type(pl_module).__name__} makes one update per "
                             "batch: use updates=1")
        self.memory = writer.memory

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if not isinstance(batch, dict) or not {"x", "y"} <= batch.keys():
            raise ValueError(f"ReplayInterleaving mixes into batches {{'x', 'y'[, 'task']}}, got {type(batch).__name__}")
        batches = self.memory.replay_batches(batch, self.updates, self.replay_size)
        if pl_module.automatic_optimization:
            batch.update(batches[0])
        else:
            batch["replay_batches"] = batches
