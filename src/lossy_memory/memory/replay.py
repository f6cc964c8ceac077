"""Rehearsal's two small pieces: the one function that mixes replayed items into an incoming batch, and the
context in which anything is stored or replayed (no gradients, eval mode).

Replayed items come from an ``EpisodicMemory`` (``replay_batches``: N mini-batches drawn and decoded in one call
before the first of the N updates, paper section 2.4), whether the continual learner's experience replay or the
``ReplayInterleaving`` callback asks for them; both mix through ``mix_replayed``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn


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


def mix_replayed(batch: Mapping[str, torch.Tensor], replay: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """One training batch: the incoming ``{"x", "y"[, "task"]}`` followed by replayed (images, labels, tasks), or the
    incoming batch alone when ``replay`` is None. ``"replayed"`` marks the replayed rows."""
    x = batch["x"]
    if replay is None:
        mixed = {"x": x, "y": batch["y"], "replayed": torch.zeros(len(x), dtype=torch.bool, device=x.device)}
        if "task" in batch:
            mixed["task"] = batch["task"]
        return mixed
    images, labels, tasks = replay
    if images.shape[1:] != x.shape[1:]:
        raise ValueError(f"replayed images have shape {tuple(images.shape[1:])} but incoming images {tuple(x.shape[1:])}")
    mixed = {"x": torch.cat([x, images.to(x.device, x.dtype)]), "y": torch.cat([batch["y"], labels.to(batch["y"].device, batch["y"].dtype)]),
             "replayed": torch.arange(len(x) + len(images), device=x.device) >= len(x)}
    if "task" in batch:
        mixed["task"] = torch.cat([batch["task"], tasks.to(batch["task"].device, batch["task"].dtype)])
    return mixed
