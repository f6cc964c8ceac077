"""The recollection memory's generator, trained online: a DiscreteVAE, its objective, its anchor, its initialisation.

The generator trains alongside the classifier on each incoming batch interleaved with its own recollections (codes
drawn from the memory and decoded before the update), so it does not forget either (paper, section 2.4). With
``anchor_weight`` > 0 it is also held to decode the codes stored up to the last task boundary as a frozen copy taken
there did (``end_task``): autoencoding its recollections alone lets the decoder drift, so that old codes come to
decode as images of recent tasks.

Transfer (paper, Table 5 and Figure 3 right): ``init`` names a DiscreteVAE checkpoint written by
``python -m lossy_memory.train`` on another dataset (e.g. ``+experiment=cifar10_generator`` for a CIFAR-100 stream);
the generator starts from its weights and keeps training online. The checkpoint's latent (c, l), image shape and
layers must be the generator's: a mismatch is a ValueError at construction, before any training. The checkpoint is
read here with ``torch.load`` (its stored run config says what it holds), so ``memory/`` needs nothing from ``models/``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lossy_memory.memory.buffers import BufferSample, ExperienceBuffer, MixedBuffer, RecollectionBuffer
from lossy_memory.memory.replay import evaluating

Draw = Callable[[int], list[tuple[ExperienceBuffer, BufferSample]]]  # n items drawn uniformly over a memory's stores


class OnlineGenerator(nn.Module):
    """``vae``: the DiscreteVAE. ``replay_size``: recollections per update (None: as many as incoming images; 0: none,
    the generator learns from incoming data alone, Figure 3's "no buffer"). ``anchor_weight``: see the module docstring.
    ``init``: a DiscreteVAE checkpoint to start from."""

    def __init__(self, vae: nn.Module, replay_size: int | None = None, anchor_weight: float = 0.0, init: str | None = None):
        super().__init__()
        if replay_size is not None and replay_size < 0:
            raise ValueError(f"memory.generator_replay_size must be >= 0 (0: the generator never replays) or null, got {replay_size}")
        if anchor_weight < 0:
            raise ValueError(f"memory.anchor_weight must be >= 0, got {anchor_weight}")
        self.vae = vae
        self.replay_size, self.anchor_weight = replay_size, float(anchor_weight)
        self.init = None if init is None else str(init)
        if init is not None:
            initialise_from_checkpoint(vae, init)
        object.__setattr__(self, "snapshot", None)  # not a submodule: a frozen working copy, saved by get_extra_state
        self.snapshot_task = -1  # codes of tasks up to this one are anchored to the snapshot

    def make_optimizer(self) -> torch.optim.Optimizer:
        return self.vae.optimizer_factory(params=self.vae.parameters())

    def parameter_bits(self) -> int:
        return 32 * sum(p.numel() for p in self.vae.parameters())

    def end_task(self, task: int) -> None:
        """Task boundary: with ``anchor_weight`` > 0, keep a frozen copy of the generator as the anchor."""
        if self.anchor_weight > 0:
            object.__setattr__(self, "snapshot", copy.deepcopy(self.vae).eval().requires_grad_(False))
            self.snapshot_task = int(task)

    def loss(self, x: torch.Tensor, draw: Draw | None) -> torch.Tensor:
        """The DiscreteVAE loss (per-image reconstruction error + kl_weight * KL) on incoming x and recollections drawn
        with ``draw`` (None: an empty memory). Codes stored up to the snapshot's task are decoded as the snapshot
        does, and the decoder is trained to map each to it (the same reconstruction error, times ``anchor_weight``);
        codes stored since are the current generator's own. Lossless items of a mixed memory join as images."""
        vae = self.vae
        rows, anchor = [x], None
        if draw is not None and self.replay_size != 0:
            codes, tasks, images = [], [], []
            for store, drawn in draw(self.replay_size or len(x)):
                if isinstance(store, MixedBuffer):
                    split = len(drawn.data[0])
                    codes.append(drawn.data[0])
                    tasks.append(drawn.tasks[:split])
                    images.append(drawn.data[1])
                elif isinstance(store, RecollectionBuffer):
                    codes.append(drawn.data)
                    tasks.append(drawn.tasks)
            if codes:
                recollections, anchor = self.recollections(torch.cat(codes).to(x.device), torch.cat(tasks).to(x.device), x.dtype,
                                                           sync_free=x.device.type != "cpu")
                rows.append(recollections)
            if images:
                rows.append(torch.cat(images).to(x.device).float() / 255)
        batch = torch.cat(rows)
        x_hat, kl = vae(batch)
        loss = vae.reconstruction_error(x_hat, batch).mean() + vae.kl_weight * kl.mean()
        return loss if anchor is None else loss + self.anchor_weight * anchor

    def recollections(self, codes: torch.Tensor, tasks: torch.Tensor, dtype: torch.dtype,
                      sync_free: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The images ``codes`` stand for (codes of tasks up to the snapshot's decoded by the snapshot, the others by the
        generator itself) and the anchor term (None when no code is anchored). ``sync_free``: decode every code with
        both and pick per item, instead of splitting the codes by a mask whose size the host must read: more work,
        but an accelerator never waits (the same values)."""
        vae = self.vae
        if self.snapshot is None:
            with evaluating(vae):
                return vae.decode(codes).to(dtype), None
        old = tasks <= self.snapshot_task
        if sync_free:
            with evaluating(self.snapshot), evaluating(vae):
                recollections = torch.where(old.view(-1, *[1] * len(vae.image_shape)), self.snapshot.decode(codes), vae.decode(codes)).to(dtype)
            errors = vae.reconstruction_error(vae.decoder(vae.latent.embed(codes)), recollections)
            weight = old.to(errors.dtype)
            return recollections, (errors * weight).sum() / weight.sum().clamp(min=1)
        recollections = torch.empty(len(codes), *vae.image_shape, dtype=dtype, device=codes.device)
        for mask, source in ((old, self.snapshot), (~old, vae)):
            if mask.any():
                with evaluating(source):
                    recollections[mask] = source.decode(codes[mask]).to(dtype)
        if not old.any():
            return recollections, None
        return recollections, vae.reconstruction_error(vae.decoder(vae.latent.embed(codes[old])), recollections[old]).mean()

    def update(self, x: torch.Tensor, draw: Draw | None, optimizer: torch.optim.Optimizer,
               backward: Callable[[torch.Tensor], None], steps: int = 1) -> torch.Tensor:
        """``steps`` updates on incoming x (recollections drawn afresh before each); the last loss, detached."""
        for _ in range(steps):
            loss = self.loss(x, draw)
            optimizer.zero_grad(set_to_none=True)
            backward(loss)
            optimizer.step()
        return loss.detach()

    # -- checkpoints: the snapshot travels with the module's state ---------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        snapshot = None if self.snapshot is None else {k: v.detach().cpu().clone() for k, v in self.snapshot.state_dict().items()}
        return {"snapshot": snapshot, "snapshot_task": self.snapshot_task}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("snapshot") is not None:
            snapshot = copy.deepcopy(self.vae).eval().requires_grad_(False)
            snapshot.load_state_dict(state["snapshot"])
            object.__setattr__(self, "snapshot", snapshot)
            self.snapshot_task = int(state["snapshot_task"])


def initialise_from_checkpoint(vae: nn.Module, ckpt_path: str | Path) -> None:
    """Copy the weights of the DiscreteVAE in checkpoint ``ckpt_path`` into ``vae``, after checking that both have the
    same latent (c, l) and image shape (ValueError naming both otherwise)."""
    path = Path(ckpt_path)
    how = ("python -m lossy_memory.train +experiment=transfer_generator data=<another dataset> "
           f"model.latent.c={vae.latent.c} model.latent.l={vae.latent.l} model.hidden={vae.hidden}")
    if not path.is_file():
        raise FileNotFoundError(f"memory.generator_init={path} does not exist: train a DiscreteVAE with `{how}` (`make "
                                "transfer-generators` trains the ones the lifelong experiments use), point memory.generator_init "
                                "at an existing checkpoint, or start from random weights with memory.generator_init=null")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"memory.generator_init={path} is not a readable checkpoint ({type(error).__name__}: {error})") from error
    model = (checkpoint.get("run_config") or {}).get("model") or {}
    if not str(model.get("_target_", "")).endswith("DiscreteVAE") or "state_dict" not in checkpoint:
        raise ValueError(f"memory.generator_init={path} holds a {model.get('_target_', 'checkpoint without a run config')}, "
                         f"not a DiscreteVAE written by `python -m lossy_memory.train`: train one with `{how}`")
    theirs = (int(model["latent"]["c"]), int(model["latent"]["l"]))
    ours = (vae.latent.c, vae.latent.l)
    if theirs != ours:
        raise ValueError(f"memory.generator_init={path} holds a DiscreteVAE with latent c={theirs[0]}, l={theirs[1]} but "
                         f"the memory's generator has c={ours[0]}, l={ours[1]}: set memory.generator.latent.c={theirs[0]} "
                         f"memory.generator.latent.l={theirs[1]}, or train a generator of that size")
    if tuple(model["image_shape"]) != tuple(vae.image_shape):
        raise ValueError(f"memory.generator_init={path} holds a DiscreteVAE for images of shape {list(model['image_shape'])} "
                         f"but the memory's generator makes {list(vae.image_shape)} (the stream's): transfer needs the same image shape")
    try:
        vae.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise ValueError(f"memory.generator_init={path}: its DiscreteVAE's layers differ from the memory's generator "
                         f"(memory.generator.hidden?): {error}") from error
