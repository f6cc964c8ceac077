"""Rehearsal: mix recollections decoded from an experience buffer into each incoming batch (paper, section 2.4).

For every incoming batch the interleaver draws N mini-batches from the buffer, decodes them through the
generator and returns N training batches, each the incoming examples followed by one mini-batch of
recollections; the caller makes one update per returned batch. Everything is drawn, decoded and labelled
before the first of those updates, so with N > 1 the k-th update trains on recollections the generator made
k updates ago: the decoder producing recollections lags the model being trained, as in the paper.

Design: a plain helper that a model's training step calls, not a Lightning Callback (so it lives in memory/). N updates per incoming
batch need the model's own optimisation loop (``automatic_optimization = False``); a callback could only
rewrite the single batch Lightning hands to ``training_step``. The helper keeps models decoupled all the same:
a model sees ready batches and knows nothing of buffers, sampling strategies or decoding. It gets the buffer
the RecollectionWriter fills (``find_writer(trainer).buffer``), e.g. by completing a Hydra partial
(``_partial_: true``) in ``setup``. Typical use::

    for mixed in self.replay.interleave(batch, decoder=self.generator.decode):
        loss = F.cross_entropy(self.classifier(mixed["x"]), mixed["y"])
        optimizer.zero_grad(); self.manual_backward(loss); optimizer.step()

Targets: the stored labels by default; with a ``teacher`` (any callable images -> targets, e.g. a frozen
network's logits, for distillation) ``"y"`` holds the teacher's outputs on every row instead, computed before
the updates too. ``"replayed"`` marks the recollection rows, for losses that treat the two parts differently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from lossy_memory.memory.buffers import Decoder, ExperienceBuffer
from lossy_memory.memory.sampling import RandomSampling, SamplingStrategy, Scorer

Teacher = Callable[[torch.Tensor], torch.Tensor]


@contextmanager
def evaluating(fn: object) -> Iterator[None]:
    """No gradients, and the module behind ``fn`` (a module or its bound method) in eval mode, restored after.

    What is stored or replayed must not depend on dropout or batch statistics of the moment; each submodule's own
    mode is restored, so a deliberately frozen part stays frozen.
    """
    module = getattr(fn, "__self__", fn)
    modes = [(m, m.training) for m in module.modules()] if isinstance(module, nn.Module) else []
    for m, _ in modes:
        m.training = False
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode


class ReplayInterleaver:
    """N training batches per incoming batch: the incoming examples plus one mini-batch of decoded recollections each.

    ``updates``: N, mini-batches of recollections (and so updates) per incoming batch. ``replay_size``: recollections
    per mini-batch (None: as many as the incoming batch holds). ``sampling``: which stored items to replay
    (lossy_memory.memory.sampling; default uniform "buffer sampling"). While the buffer is empty the N batches are
    the incoming examples alone.
    """

    def __init__(self, buffer: ExperienceBuffer, updates: int = 1, replay_size: int | None = None,
                 sampling: SamplingStrategy | None = None):
        if not isinstance(buffer, ExperienceBuffer):
            raise ValueError(f"buffer must be an ExperienceBuffer, got {type(buffer).__name__}")
        if isinstance(updates, bool) or int(updates) != updates or updates < 1:
            raise ValueError(f"updates (N, mini-batches of recollections per incoming batch) must be an integer >= 1, got {updates!r}")
        if replay_size is not None and (isinstance(replay_size, bool) or int(replay_size) != replay_size or replay_size < 1):
            raise ValueError(f"replay_size (recollections per mini-batch) must be an integer >= 1 or None, got {replay_size!r}")
        self.buffer, self.updates = buffer, int(updates)
        self.replay_size = None if replay_size is None else int(replay_size)
        self.sampling = sampling or RandomSampling()

    def interleave(self, batch: Mapping[str, torch.Tensor], decoder: Decoder | None = None, teacher: Teacher | None = None,
                   scorer: Scorer | None = None) -> list[dict[str, torch.Tensor]]:
        """The N batches ``{"x", "y", "replayed"[, "task"]}`` for one incoming ``{"x", "y"[, "task"]}`` batch.

        ``decoder``: codes -> images in [0, 1] (e.g. the generator's ``decode``; None for lossless buffers).
        ``teacher``: images -> targets; when given, ``"y"`` is its output on all rows. ``scorer``: for sampling
        strategies that need one (active, diverse). ``"task"`` is kept when the incoming batch has it.
        """
        x = batch["x"]
        n = self.replay_size or len(x)
        replays: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None] | None] = [None] * self.updates
        if len(self.buffer):
            drawn = [self.sampling.select(self.buffer, n, scorer) for _ in range(self.updates)]
            with evaluating(decoder):
                replays = [(self.buffer.decode(decoder, sample.data), sample.labels, sample.tasks) for sample in drawn]
        batches = [mix_replayed(batch, replay, teacher is None) for replay in replays]
        if teacher is not None:
            with evaluating(teacher):
                for mixed in batches:
                    targets = teacher(mixed["x"])
                    if not isinstance(targets, torch.Tensor) or len(targets) != len(mixed["x"]):
                        raise ValueError(f"the teacher must return one target per image ({len(mixed['x'])}), "
                                         f"got {getattr(targets, 'shape', type(targets).__name__)}")
                    mixed["y"] = targets
        return batches



def mix_replayed(batch: Mapping[str, torch.Tensor], replay: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None] | None,
                 need_labels: bool = True) -> dict[str, torch.Tensor]:
    """One training batch: the incoming ``{"x", "y"[, "task"]}`` followed by replayed (images, labels, tasks), or the
    incoming batch alone when ``replay`` is None. ``"replayed"`` marks the replayed rows. Every replay path (the
    interleaver, the continual strategies, the replay callback) mixes through this function."""
    x = batch["x"]
    if replay is None:
        mixed = {"x": x, "y": batch["y"], "replayed": torch.zeros(len(x), dtype=torch.bool, device=x.device)}
        if "task" in batch:
            mixed["task"] = batch["task"]
        return mixed
    images, labels, tasks = replay
    if images.shape[1:] != x.shape[1:]:
        raise ValueError(f"recollections have shape {tuple(images.shape[1:])} but incoming images {tuple(x.shape[1:])}")
    if need_labels and labels is None:
        raise ValueError("these recollections carry no labels (drawn as codes from the prior): pass a teacher to label them")
    replayed = torch.arange(len(x) + len(images), device=x.device) >= len(x)
    mixed = {"x": torch.cat([x, images.to(x.device, x.dtype)]), "replayed": replayed}
    if need_labels:
        mixed["y"] = torch.cat([batch["y"], labels.to(batch["y"].device, batch["y"].dtype)])
    if "task" in batch:
        if tasks is None:
            raise ValueError("these recollections carry no task ids (drawn as codes from the prior), but the batch has tasks")
        mixed["task"] = torch.cat([batch["task"], tasks.to(batch["task"].device, batch["task"].dtype)])
    return mixed
