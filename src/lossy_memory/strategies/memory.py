"""The episodic memory a continual-learning strategy keeps: lossless images, recollections, or both, under one bit budget.

Every strategy that keeps a memory (experience replay, GEM, A-GEM, DER++, iCaRL) sees only this class, so what the
memory holds is a config choice (``kind``):

* ``"lossless"``: uint8 images (``LosslessBuffer``);
* ``"recollection"``: DiscreteVAE codes (``RecollectionBuffer``), encoded by ``generator`` when stored and decoded
  by it when drawn. The generator trains online alongside the classifier on incoming data interleaved with its own
  recollections (``generator_loss``), so it does not forget either (paper, section 2.4); with ``anchor_weight`` > 0 it is
  also held to decode stored codes as it did at the last task boundary (``end_task``);
* ``"mixed"``: both under one budget (``MixedBuffer``, ``lossy_fraction`` of the bits on codes).

With ``reconstruct_incoming``, experience replay trains the classifier on the incoming images' reconstructions
(``training_view``) instead of the images, so that it cannot tell replayed (blurred) from incoming (sharp) examples.

The budget is given in bits (``budget_bits``) or as an effective buffer size (``lossless_equivalent``: the bits of
that many lossless images with their labels and task ids), so that lossless and lossy memories compare at equal bits.

The memory is a set of *stores* (ExperienceBuffers) keyed by an integer: ``layout="shared"`` keeps one reservoir
over the whole stream (store 0); ``layout="per_task"`` one reservoir per task, each with ``1/num_tasks`` of the
budget (GEM's episodic memory); iCaRL replaces whole stores itself (one per class, ``set_store``). ``sample`` draws
uniformly over every stored item; ``contents`` returns all of them (optionally those of one task).
The stores' states travel in the module's state dict (``get_extra_state``), so checkpoints keep the memory.

Transfer (paper, Table 5 and Figure 3 right): ``generator_init`` names a DiscreteVAE checkpoint written by
``python -m lossy_memory.train`` on another dataset (e.g. ``+experiment=cifar10_generator`` for a CIFAR-100 stream);
the generator starts from its weights instead of a random init and keeps training online. The checkpoint's latent
(c, l), image shape and layer sizes must be the memory's generator's: a mismatch is a ValueError at construction,
before any training.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from lossy_memory.memory import ExperienceBuffer, LosslessBuffer, MixedBuffer, RecollectionBuffer
from lossy_memory.memory.budget import capacity_for_budget, code_bits, label_task_bits, lossless_bits
from lossy_memory.memory.buffers import ReservoirBuffer
from lossy_memory.memory.replay import evaluating
from lossy_memory.memory.sampling import RandomSampling, SamplingStrategy

KINDS = ("lossless", "recollection", "mixed")
LAYOUTS = ("shared", "per_task")


class Replayed(NamedTuple):
    """Items drawn from the memory, as images on the requested device. ``store``/``slots`` say where each item sits."""

    x: torch.Tensor
    y: torch.Tensor
    task: torch.Tensor
    store: torch.Tensor
    slots: torch.Tensor


class Written(NamedTuple):
    """Where ``add`` put incoming items: batch positions ``sources`` landed in ``slots`` of store ``store``."""

    store: int
    sources: torch.Tensor
    slots: torch.Tensor


class EpisodicMemory(nn.Module):
    """See the module docstring. ``build`` (called by the learner once the stream's shape is known) checks the budget."""

    def __init__(
        self,
        kind: str = "lossless",
        lossless_equivalent: float | None = None,
        budget_bits: float | None = None,
        layout: str = "shared",
        lossy_fraction: float = 0.5,
        generator: nn.Module | None = None,
        generator_replay_size: int | None = None,
        anchor_weight: float = 0.0,
        reconstruct_incoming: bool = False,
        sampling: SamplingStrategy | None = None,
        seed: int = 0,
        device: str = "cpu",
        count_generator: bool = False,
        generator_init: str | None = None,
    ):
        super().__init__()
        self.count_generator = bool(count_generator)  # total constraint (Table 5): the generator's parameter bits come out of the budget
        if kind not in KINDS:
            raise ValueError(f"memory.kind must be one of {KINDS}, got {kind!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"memory.layout must be one of {LAYOUTS}, got {layout!r}")
        if (lossless_equivalent is None) == (budget_bits is None):
            raise ValueError("give exactly one of memory.lossless_equivalent (effective buffer size in lossless images) and "
                             f"memory.budget_bits, got {lossless_equivalent} and {budget_bits}")
        if lossless_equivalent is not None and not lossless_equivalent > 0:
            raise ValueError(f"memory.lossless_equivalent must be > 0, got {lossless_equivalent}")
        if budget_bits is not None and not budget_bits > 0:
            raise ValueError(f"memory.budget_bits must be > 0, got {budget_bits}")
        needs_generator = kind != "lossless"
        if needs_generator and generator is None:
            raise ValueError(f"memory.kind={kind!r} keeps DiscreteVAE codes: give memory.generator (a DiscreteVAE)")
        if not needs_generator and generator is not None:
            raise ValueError("memory.kind='lossless' keeps images and uses no generator: set memory.generator=null")
        if generator is not None and not all(hasattr(generator, name) for name in ("encode", "decode", "latent")):
            raise ValueError(f"memory.generator must be a DiscreteVAE (encode/decode/latent), got {type(generator).__name__}")
        if generator_replay_size is not None and generator_replay_size < 0:
            raise ValueError(f"memory.generator_replay_size must be >= 0 (0: the generator never replays) or null, "
                             f"got {generator_replay_size}")
        if generator_init is not None:
            if generator is None:
                raise ValueError("memory.generator_init initialises the recollection memory's DiscreteVAE, but "
                                 f"memory.kind={kind!r} has none: use memory=recollection or memory=mixed, or generator_init=null")
            initialise_generator(generator, generator_init)
        self.generator_init = None if generator_init is None else str(generator_init)
        self.kind, self.layout, self.lossy_fraction = kind, layout, float(lossy_fraction)
        self.lossless_equivalent, self.requested_bits = lossless_equivalent, budget_bits
        self.generator = generator
        if anchor_weight < 0:
            raise ValueError(f"memory.anchor_weight must be >= 0, got {anchor_weight}")
        self.generator_replay_size = generator_replay_size
        self.anchor_weight = float(anchor_weight)
        if reconstruct_incoming and generator is None:
            raise ValueError("memory.reconstruct_incoming passes incoming images through the generator, but memory.kind='lossless' "
                             "has none: use memory=recollection or mixed, or reconstruct_incoming=false")
        self.reconstruct_incoming = bool(reconstruct_incoming)
        object.__setattr__(self, "_snapshot", None)  # not a submodule: a working copy, outside the state dict
        self._snapshot_task = -1  # codes of tasks up to this one are anchored to the snapshot
        self.sampling = sampling or RandomSampling()
        self.seed, self.storage_device = int(seed), device
        self.stores: dict[int, ExperienceBuffer] = {}
        self._rng = torch.Generator().manual_seed(self.seed)
        self.image_shape: tuple[int, int, int] | None = None

    # -- shape and budget ---------------------------------------------------------------------------------
    def build(self, image_shape: Sequence[int], num_classes: int, num_tasks: int) -> None:
        """Fix the shapes and check that the budget holds at least one item per store (ValueError otherwise)."""
        self.image_shape = tuple(int(s) for s in image_shape)
        self.num_classes, self.num_tasks = int(num_classes), int(num_tasks)
        if self.generator is not None and tuple(self.generator.image_shape) != self.image_shape:
            raise ValueError(f"memory.generator makes images of shape {list(self.generator.image_shape)} but the stream has "
                             f"{list(self.image_shape)}")
        if self.lossless_equivalent is not None:
            self.budget_bits = float(self.lossless_equivalent) * lossless_bits(self.image_shape, self.num_classes, self.num_tasks)
        else:
            self.budget_bits = float(self.requested_bits)
        if self.count_generator:
            total, self.budget_bits = self.budget_bits, self.budget_bits - self.generator_bits()
            if self.budget_bits <= 0:
                raise ValueError(f"total constraint: the generator's parameters take {self.generator_bits()} bits, the whole budget "
                                 f"is {total:.0f}: raise the budget or shrink the generator (memory.generator.hidden, latent c)")
        self.stores, self._rng = {}, torch.Generator().manual_seed(self.seed)
        share = self.store_budget()
        try:
            self._new_buffer(share, seed=self.seed)  # raises when not even one item fits
        except ValueError as error:
            where = f" per task ({self.num_tasks} tasks)" if self.layout == "per_task" else ""
            raise ValueError(f"memory budget of {self.budget_bits:.0f} bits{where} ({share:.0f} bits) holds no {self.kind} "
                             f"item: {error}. Raise memory.lossless_equivalent or memory.budget_bits") from error
        if self.layout == "shared":
            self.stores[0] = self._new_buffer(share, seed=self.seed)

    def store_budget(self) -> float:
        return self.budget_bits / (self.num_tasks if self.layout == "per_task" else 1)

    @property
    def item_bits(self) -> int:
        """Bits of one stored item of this memory's kind (payload + label + task id); mixed: the recollection's."""
        side = label_task_bits(self.num_classes, self.num_tasks)
        if self.kind == "lossless":
            return 8 * math.prod(self.image_shape) + side
        return code_bits(self.generator.latent.c, self.generator.latent.l) + side

    def items_for_bits(self, bits: float) -> int:
        """Items of this memory's kind (not mixed) that ``bits`` holds, as one buffer (ValueError when none fits)."""
        if self.kind == "mixed":
            raise ValueError("a mixed memory has no single item size")
        packed = 0 if self.kind == "lossless" else self.item_bits - label_task_bits(self.num_classes, self.num_tasks)
        return capacity_for_budget(bits, self.item_bits, packed)

    def _new_buffer(self, budget_bits: float | None = None, capacity: int | None = None, seed: int = 0) -> ExperienceBuffer:
        common = {"num_classes": self.num_classes, "num_tasks": self.num_tasks, "seed": seed, "device": self.storage_device}
        if self.kind == "lossless":
            return LosslessBuffer(self.image_shape, capacity=capacity, budget_bits=budget_bits, **common)
        c, l = self.generator.latent.c, self.generator.latent.l
        if self.kind == "recollection":
            return RecollectionBuffer(c, l, capacity=capacity, budget_bits=budget_bits, **common)
        if capacity is not None:
            raise ValueError("a mixed memory is sized by bits, not items")
        return MixedBuffer(c, l, self.image_shape, budget_bits, self.lossy_fraction, **common)

    # -- encoding and decoding ------------------------------------------------------------------------------
    @property
    def decoder(self):
        return None if self.generator is None else self.generator.decode

    def encode(self, x: torch.Tensor) -> Any:
        """What a buffer of this kind stores for float images x in [0, 1]: images, codes, or (images, codes)."""
        if self.kind == "lossless":
            return x.detach().clamp(0, 1)
        with evaluating(self.generator):
            codes = self.generator.encode(x)
        return codes if self.kind == "recollection" else (x.detach().clamp(0, 1), codes)

    def training_view(self, x: torch.Tensor) -> torch.Tensor:
        """The incoming images as the classifier trains on them: with ``reconstruct_incoming``, decoded from their
        codes (what storing them would keep), so that incoming and replayed images are both recollections and the
        classifier cannot tell old classes from new ones by sharpness; otherwise x itself."""
        if not self.reconstruct_incoming:
            return x
        with evaluating(self.generator):
            return self.generator.reconstruct(x).to(x.dtype)

    def _decode(self, store: ExperienceBuffer, data: Any, device: torch.device) -> torch.Tensor:
        with evaluating(self.generator):
            return store.decode(self.decoder, data).to(device)

    # -- the interface strategies use -------------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(len(s) for s in self.stores.values())

    @property
    def capacity(self) -> int:
        return sum(s.capacity for s in self.stores.values())

    def bits_used(self) -> int:
        return sum(s.bits_used() for s in self.stores.values())

    def shared_store(self) -> ExperienceBuffer:
        """The one reservoir of a shared memory (what ReplayInterleaver draws from)."""
        if self.layout != "shared" or 0 not in self.stores:
            raise ValueError("this strategy replays from one reservoir: use memory.layout=shared (and build the memory first)")
        return self.stores[0]

    def add(self, x: torch.Tensor, y: torch.Tensor, task: int) -> list[Written]:
        """Offer a batch of one task (float images in [0, 1]) to the reservoir; returns where items landed."""
        key = 0 if self.layout == "shared" else int(task)
        if key not in self.stores:
            if self.layout == "shared":
                raise ValueError("memory used before build()")
            self.stores[key] = self._new_buffer(self.store_budget(), seed=self.seed + 1 + key)
        store = self.stores[key]
        writes = [Written(key, s, t) for s, t in pending_writes(store, len(x))]
        store.add(self.encode(x), y.detach().cpu(), int(task))
        return writes

    def set_store(self, key: int, x: torch.Tensor, y: torch.Tensor, task: int, capacity: int) -> None:
        """Replace store ``key`` by exactly the items x (in order), in a buffer of ``capacity`` items (iCaRL's exemplars)."""
        if len(x) > capacity:
            raise ValueError(f"{len(x)} items do not fit a store of {capacity}")
        store = self._new_buffer(capacity=capacity, seed=self.seed + 1 + key)
        if len(x):
            store.add(self.encode(x), y.detach().cpu(), int(task))
        self.stores[key] = store

    def truncate_store(self, key: int, capacity: int) -> None:
        """Keep the first ``capacity`` items of store ``key`` as they are stored (codes are not re-encoded), in a buffer
        of that capacity (iCaRL's exemplar-set reduction)."""
        data, labels, tasks = stored_items(self.stores[key])
        keep = torch.arange(len(labels)) < capacity
        store = self._new_buffer(capacity=capacity, seed=self.seed + 1 + key)
        if keep.any():
            store.add(select(data, keep), labels[keep], tasks[keep])
        self.stores[key] = store

    def _draw(self, n: int) -> list[tuple[int, ExperienceBuffer, Any]]:
        """n stored items drawn uniformly over every store: (key, store, BufferSample) per store drawn from."""
        if n < 1:
            raise ValueError(f"number of items to sample must be >= 1, got {n}")
        keys = [k for k, s in self.stores.items() if len(s)]
        if not keys:
            raise ValueError("cannot sample from an empty memory: add items first")
        sizes = torch.tensor([len(self.stores[k]) for k in keys], dtype=torch.float64)
        counts = torch.bincount(torch.multinomial(sizes, n, replacement=True, generator=self._rng), minlength=len(keys))
        draws = []
        for key, count in zip(keys, counts.tolist()):
            if count:
                store = self.stores[key]
                draws.append((key, store, self.sampling.select(store, count) if len(keys) == 1 else store.sample(count)))
        return draws

    def sample(self, n: int, device: torch.device | str = "cpu") -> Replayed:
        """n items drawn uniformly over everything stored (with replacement), decoded to images on ``device``.
        With one store the memory's sampling strategy picks them; across stores, uniform draws."""
        parts = []
        for key, store, drawn in self._draw(n):
            x = self._decode(store, drawn.data, torch.device(device))
            parts.append((x, drawn.labels, drawn.tasks, torch.full((len(x),), key), drawn.slots))
        x, y, t, k, s = (torch.cat([p[i].to(device if i == 0 else "cpu") for p in parts]) for i in range(5))
        return Replayed(x, y.to(device), t.to(device), k, s.cpu())

    def contents(self, task: int | None = None, device: torch.device | str = "cpu",
                 key: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every stored item (of ``task``, of store ``key``, when given) as (images, labels, tasks) on ``device``."""
        xs, ys, ts = [], [], []
        for k, store in self.stores.items():
            if not len(store) or (key is not None and k != key) or (self.layout == "per_task" and task is not None and k != task):
                continue
            data, labels, tasks = stored_items(store)
            keep = torch.ones(len(labels), dtype=torch.bool) if task is None else tasks.cpu() == task
            if not keep.any():
                continue
            xs.append(self._decode(store, select(data, keep), torch.device(device)))
            ys.append(labels.cpu()[keep].long())
            ts.append(tasks.cpu()[keep].long())
        if not xs:
            empty = torch.empty(0, dtype=torch.long, device=device)
            return torch.empty(0, *self.image_shape, device=device), empty, empty
        return torch.cat(xs), torch.cat(ys).to(device), torch.cat(ts).to(device)

    # -- the generator's own online training ----------------------------------------------------------------------
    def end_task(self, task: int) -> None:
        """Task boundary: with ``anchor_weight`` > 0, keep a frozen copy of the generator; until the next boundary the
        generator learns to decode every code stored so far as that copy does (the codes stay decodable: no drift)."""
        if self.generator is not None and self.anchor_weight > 0:
            snapshot = copy.deepcopy(self.generator).eval().requires_grad_(False)
            object.__setattr__(self, "_snapshot", snapshot)
            self._snapshot_task = int(task)

    def generator_loss(self, x: torch.Tensor) -> torch.Tensor:
        """The generator's online objective on incoming images x interleaved with its own recollections.

        The DiscreteVAE loss (per-image reconstruction error + kl_weight * KL) on x and ``generator_replay_size``
        recollections (decoded from stored codes, drawn before the update; lossless items of a mixed memory join as
        images). With ``anchor_weight`` > 0 and a snapshot from the last task boundary, the recollections of codes
        stored up to that boundary are the snapshot's decoding of them, and the decoder is also trained to map each
        such code to it (the same reconstruction error, times ``anchor_weight``): autoencoding its recollections
        alone lets the decoder drift, so that old codes come to decode as images of recent tasks. Codes stored since the boundary are left to the
        current generator (the snapshot never learnt them).
        """
        rows, anchor = [x], None
        if len(self) and self.generator_replay_size != 0:  # 0: online on incoming data only (Figure 3's "no buffer")
            codes, tasks, images = [], [], []
            for _, store, drawn in self._draw(self.generator_replay_size or len(x)):
                if isinstance(store, MixedBuffer):
                    split = len(drawn.data[0])
                    codes.append(drawn.data[0])
                    tasks.append(drawn.tasks[:split])
                    images.append(drawn.data[1])
                elif isinstance(store, RecollectionBuffer):
                    codes.append(drawn.data)
                    tasks.append(drawn.tasks)
            if codes:
                codes, tasks = torch.cat(codes).to(x.device), torch.cat(tasks).to(x.device)
                # codes stored up to the snapshot's task are decoded as the snapshot does, and anchored to it;
                # codes stored since then are the current generator's own
                old = tasks <= self._snapshot_task if self._snapshot is not None else torch.zeros_like(tasks, dtype=torch.bool)
                recollections = torch.empty(len(codes), *x.shape[1:], dtype=x.dtype, device=x.device)
                for mask, source in ((old, self._snapshot), (~old, self.generator)):
                    if mask.any():
                        with evaluating(source):
                            recollections[mask] = source.decode(codes[mask]).to(x.dtype)
                rows.append(recollections)
                if old.any():
                    decoded = self.generator.decoder(self.generator.latent.embed(codes[old]))
                    anchor = self.generator.reconstruction_error(decoded, recollections[old]).mean()
            if images:
                rows.append(torch.cat(images).to(x.device).float() / 255)
        batch = torch.cat(rows)
        x_hat, kl = self.generator(batch)
        reconstruction = self.generator.reconstruction_error(x_hat, batch).mean()
        loss = reconstruction + self.generator.kl_weight * kl.mean()
        return loss if anchor is None else loss + self.anchor_weight * anchor

    def generator_bits(self) -> int:
        return 0 if self.generator is None else 32 * sum(p.numel() for p in self.generator.parameters())

    # -- checkpoints ------------------------------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        snapshot = None if self._snapshot is None else {k: v.detach().cpu().clone() for k, v in self._snapshot.state_dict().items()}
        return {"stores": {k: (s.capacity, s.state_dict()) for k, s in self.stores.items()}, "rng": self._rng.get_state(),
                "snapshot": snapshot, "snapshot_task": self._snapshot_task}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if self.image_shape is None:
            raise ValueError("build the memory (learner setup) before loading its state")
        stores = {}
        for key, (capacity, buffer_state) in state["stores"].items():
            current = self.stores.get(key)
            store = current if current is not None and current.capacity == capacity else (
                self._new_buffer(self.store_budget(), seed=self.seed + 1 + key) if self.kind == "mixed"
                else self._new_buffer(capacity=capacity, seed=self.seed + 1 + key))
            store.load_state_dict(buffer_state)
            stores[key] = store
        self.stores = stores
        self._rng.set_state(state["rng"])
        if state.get("snapshot") is not None:
            snapshot = copy.deepcopy(self.generator).eval().requires_grad_(False)
            snapshot.load_state_dict(state["snapshot"])
            object.__setattr__(self, "_snapshot", snapshot)
            self._snapshot_task = state["snapshot_task"]


def initialise_generator(generator: nn.Module, ckpt_path: str) -> None:
    """Copy the weights of the DiscreteVAE in checkpoint ``ckpt_path`` into ``generator`` (transfer), after checking
    that both have the same latent (c, l) and image shape (ValueError naming both otherwise)."""
    from lossy_memory.checkpoints import load_trained_module
    from lossy_memory.models import DiscreteVAE

    source, _, _ = load_trained_module(ckpt_path, DiscreteVAE, "memory.generator_init",
                                       "python -m lossy_memory.train +experiment=cifar10_generator")
    theirs = (source.latent.c, source.latent.l)
    ours = (generator.latent.c, generator.latent.l)
    if theirs != ours:
        raise ValueError(f"memory.generator_init={ckpt_path} holds a DiscreteVAE with latent c={theirs[0]}, l={theirs[1]} but "
                         f"the memory's generator has c={ours[0]}, l={ours[1]}: set memory.generator.latent.c={theirs[0]} "
                         f"memory.generator.latent.l={theirs[1]}, or train a generator of that size")
    if tuple(source.image_shape) != tuple(generator.image_shape):
        raise ValueError(f"memory.generator_init={ckpt_path} holds a DiscreteVAE for images of shape {list(source.image_shape)} "
                         f"but the memory's generator makes {list(generator.image_shape)} (the stream's): transfer needs "
                         "the same image shape")
    try:
        generator.load_state_dict(source.state_dict())
    except RuntimeError as error:
        raise ValueError(f"memory.generator_init={ckpt_path}: its DiscreteVAE's layers differ from the memory's generator "
                         f"(memory.generator.hidden?): {error}") from error


def stored_items(store: ExperienceBuffer) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """(data as ``decode`` takes it, labels, tasks) of every item a store holds."""
    if isinstance(store, MixedBuffer):
        lossy, lossless = stored_items(store.lossy), stored_items(store.lossless)
        return (lossy[0], lossless[0]), torch.cat([lossy[1], lossless[1]]), torch.cat([lossy[2], lossless[2]])
    _, labels, tasks = store.stored
    data = store.stored_codes() if isinstance(store, RecollectionBuffer) else store.stored[0]
    return data, labels.long(), tasks.long()


def select(data: Any, keep: torch.Tensor) -> Any:
    """The items of ``stored_items`` data where ``keep`` (a mixed pair keeps its codes' items first)."""
    if isinstance(data, tuple):
        split = len(data[0])
        return data[0][keep[:split].to(data[0].device)], data[1][keep[split:].to(data[1].device)]
    return data[keep.to(data.device)]


def pending_writes(store: ExperienceBuffer, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(batch positions, slots) the next ``add`` of n items will write, without changing the store.

    Slots of a MixedBuffer's lossless part are offset by the lossy part's capacity, as in its ``sample``."""
    if isinstance(store, MixedBuffer):
        (ls, lt), = pending_writes(store.lossy, n)
        (ps, pt), = pending_writes(store.lossless, n)
        return [(torch.cat([ls, ps]), torch.cat([lt, pt + store.lossy.capacity]))]
    if not isinstance(store, ReservoirBuffer):
        raise ValueError(f"cannot tell where a {type(store).__name__} writes")
    if store.num_seen + n <= store.capacity:
        return [(torch.arange(n), torch.arange(store.num_seen, store.num_seen + n))]
    state = store._insert_rng.get_state()
    try:
        return [store._reservoir_writes(n)]
    finally:
        store._insert_rng.set_state(state)
