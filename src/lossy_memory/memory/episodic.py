"""The episodic memory a continual-learning strategy keeps: lossless images, recollections, or both, under one bit budget.

Every strategy that keeps a memory (experience replay, GEM, A-GEM, DER++, iCaRL, condensed replay) sees only this
class, so what the memory holds is a config choice (``kind``, turned into a ``Codec`` once):

* ``"lossless"``: uint8 images (``LosslessBuffer``);
* ``"recollection"``: DiscreteVAE codes (``RecollectionBuffer``), encoded by ``generator`` when stored and decoded by
  it when drawn; the generator trains online (``OnlineGenerator``, ``generator_loss``);
* ``"mixed"``: both under one budget (``MixedBuffer``, ``lossy_fraction`` of the bits on codes).

With ``reconstruct_incoming``, experience replay trains the classifier on the incoming images' reconstructions
(``training_view``) instead of the images, so that it cannot tell replayed (blurred) from incoming (sharp) examples.

The budget is given in bits (``budget_bits``) or as an effective buffer size (``lossless_equivalent``: the bits of
that many lossless images with their labels and task ids), so that lossless and lossy memories compare at equal bits.
Everything kept per item is paid from it at the precision it is stored in: payload, label, task id and the per-slot
attributes a strategy asks for (DER++'s logits), so equal bits mean equal bits for every strategy.

The memory is a set of *stores* (ExperienceBuffers) keyed by an integer, grouped by a policy (``layout``):
``"shared"`` keeps one reservoir over the whole stream (store 0); ``"per_task"`` one reservoir per task, each with
``1/num_tasks`` of the budget (GEM's episodic memory); ``"per_class"`` one store per class, each with
``1/num_classes`` of the budget when fed by ``add``, or replaced whole by ``set_store`` (iCaRL's exemplar sets, condensed
memories). A strategy that needs a layout says so (``ContinualStrategy.memory_layout``) and ``build`` applies it.
``sample`` draws uniformly over every stored item; ``sample_batches`` makes all the draws of one incoming batch and
decodes them in one call; ``contents`` returns everything stored (optionally of one task or store). The stores'
states travel in the module's state dict (``get_extra_state``), so checkpoints keep the memory.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from lossy_memory.memory.budget import capacity_for_budget, label_task_bits, lossless_bits
from lossy_memory.memory.buffers import Attributes, BufferSample, ExperienceBuffer, MixedBuffer, RecollectionBuffer, attribute_bits
from lossy_memory.memory.codecs import make_codec
from lossy_memory.memory.generator import OnlineGenerator
from lossy_memory.memory.replay import evaluating, mix_replayed
from lossy_memory.memory.sampling import RandomSampling, SamplingStrategy

LAYOUTS = ("shared", "per_task", "per_class")


class Replayed(NamedTuple):
    """Items drawn from the memory, as images on the requested device. ``store``/``slots`` say where each item sits;
    ``attributes``: the per-slot attributes stored with them."""

    x: torch.Tensor
    y: torch.Tensor
    task: torch.Tensor
    store: torch.Tensor
    slots: torch.Tensor
    attributes: Mapping[str, torch.Tensor]


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
        device: str | None = None,
        count_generator: bool = False,
        generator_init: str | None = None,
        recollections: int | None = None,
    ):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"memory.layout must be one of {LAYOUTS}, got {layout!r}")
        if lossless_equivalent is None and budget_bits is None:
            raise ValueError("give memory.lossless_equivalent (effective buffer size in lossless images) or memory.budget_bits: "
                             "both are null")
        if budget_bits is not None and lossless_equivalent is not None:  # the config's default size, overridden in bits
            logging.getLogger(__name__).info(f"memory.budget_bits={budget_bits} sets the budget (memory.lossless_equivalent="
                                             f"{lossless_equivalent} is not used)")
            lossless_equivalent = None
        if lossless_equivalent is not None and not lossless_equivalent > 0:
            raise ValueError(f"memory.lossless_equivalent must be > 0, got {lossless_equivalent}")
        if budget_bits is not None and not budget_bits > 0:
            raise ValueError(f"memory.budget_bits must be > 0, got {budget_bits}")
        if generator_init is not None and generator is None:
            raise ValueError("memory.generator_init initialises the recollection memory's DiscreteVAE, but "
                             f"memory.kind={kind!r} has none: use memory=recollection or memory=mixed, or generator_init=null")
        if reconstruct_incoming and generator is None:
            raise ValueError("memory.reconstruct_incoming passes incoming images through the generator, but memory.kind='lossless' "
                             "has none: use memory=recollection or mixed, or reconstruct_incoming=false")
        self.codec = make_codec(kind, generator, lossy_fraction)
        self.online = None if generator is None else OnlineGenerator(generator, generator_replay_size, anchor_weight, generator_init)
        self.count_generator = bool(count_generator)  # total constraint (Table 5): the generator's parameter bits come out of the budget
        self.layout = layout
        self.lossless_equivalent, self.requested_bits = lossless_equivalent, budget_bits
        self.reconstruct_incoming = bool(reconstruct_incoming)
        self.recollections = recollections  # what the config sized (c, l) for (runtime.recollection_latent); reported only
        self.sampling = sampling or RandomSampling()
        self.seed, self.requested_device = int(seed), device
        self.storage_device = torch.device("cpu" if device is None else device)
        self.stores: dict[int, ExperienceBuffer] = {}
        self.attributes: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        self._rng = torch.Generator().manual_seed(self.seed)
        self.image_shape: tuple[int, int, int] | None = None

    @property
    def kind(self) -> str:
        return self.codec.kind

    @property
    def generator(self) -> nn.Module | None:
        """The DiscreteVAE (None for a lossless memory)."""
        return None if self.online is None else self.online.vae

    # -- shape and budget ---------------------------------------------------------------------------------
    def build(self, image_shape: Sequence[int], num_classes: int, num_tasks: int, layout: str | None = None,
              attributes: Attributes | None = None, who: str = "this strategy", stream_classes: int | None = None,
              ranks: int = 1) -> None:
        """Fix the shapes and check that the budget holds at least one item per store (ValueError otherwise).

        ``layout``: the grouping a strategy needs (None: the configured one); ``attributes``: the per-slot attributes
        it keeps with every item (paid from the budget); ``stream_classes``: the classes the stream holds (what a
        per-class layout splits the budget over; None: ``num_classes``). ``ranks``: the processes of a DDP run, each
        keeping a memory of its shard: the budget is the run's, so each keeps ``1/ranks`` of it (``budget_bits`` is
        this process's share, ``run_budget_bits`` the run's), and equal bits hold across device counts."""
        if layout is not None and layout != self.layout:
            if self.layout != "shared":  # "shared" is the default: a strategy's own grouping replaces it
                raise ValueError(f"{who} keeps its memory {layout.replace('_', ' ')}, but memory.layout={self.layout}: "
                                 f"set memory.layout={layout} (or leave it at shared)")
            self.layout = layout
        self.image_shape = tuple(int(s) for s in image_shape)
        self.num_classes, self.num_tasks = int(num_classes), int(num_tasks)
        self.stream_classes = self.num_classes if stream_classes is None else int(stream_classes)
        self.attributes = {str(k): (tuple(int(d) for d in shape), dtype) for k, (shape, dtype) in (attributes or {}).items()}
        if self.layout != "shared" and not isinstance(self.sampling, RandomSampling):
            raise ValueError(f"memory.sampling={type(self.sampling).__name__} picks from one reservoir, but memory.layout="
                             f"{self.layout} draws uniformly across its stores: use memory.layout=shared or the random sampling")
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
        if isinstance(ranks, bool) or int(ranks) != ranks or ranks < 1:
            raise ValueError(f"ranks must be an integer >= 1, got {ranks!r}")
        self.run_budget_bits, self.ranks = self.budget_bits, int(ranks)
        self.budget_bits = self.run_budget_bits / self.ranks
        self.stores, self._rng = {}, torch.Generator().manual_seed(self.seed)
        share = self.store_budget()
        try:
            first = self._new_buffer(share, seed=self.seed)  # raises when not even one item fits; the shared store
        except ValueError as error:
            stores = {"shared": 1, "per_task": self.num_tasks, "per_class": self.stream_classes}[self.layout]
            where = {"per_task": f" per task ({stores} tasks)", "per_class": f" per class ({stores} classes)"}.get(self.layout, "")
            where += f" per process ({self.ranks} processes share the run's)" if self.ranks > 1 else ""
            least = ""
            if self.lossless_equivalent is not None and self.kind == "lossless" and not self.count_generator:
                per_image = lossless_bits(self.image_shape, self.num_classes, self.num_tasks)
                least = f" to at least {math.ceil(stores * self.item_bits / per_image)}"
            raise ValueError(f"memory budget of {self.budget_bits:.0f} bits{where} ({share:.0f} bits) holds no {self.kind} item"
                             f"{' with its ' + ', '.join(self.attributes) if self.attributes else ''}: {error}. "
                             f"Raise memory.lossless_equivalent{least} or memory.budget_bits") from error
        if self.layout == "shared":
            self.stores[0] = first
        if self.generator is not None:
            latent = self.generator.latent
            logging.getLogger(__name__).info(
                f"{self.kind} memory: latent c={latent.c}, l={latent.l}, {self.item_bits} bits an item with its label and task id; "
                f"{self.budget_bits:,.0f} bits ({share:,.0f} a store) hold {first.capacity:,} items a store"
                + ("" if self.recollections is None else f" (memory.recollections={self.recollections} sized the latent, unless c and l were given)"))

    def store_budget(self) -> float:
        """The bits of one store that ``add`` feeds."""
        return self.budget_bits / {"shared": 1, "per_task": self.num_tasks, "per_class": self.stream_classes}[self.layout]

    @property
    def item_bits(self) -> int:
        """Bits of one stored item of this memory's kind (payload + label + task id + attributes); mixed: the recollection's."""
        payload = self.codec.packed_bits(self.image_shape) if self.kind == "mixed" else self.codec.payload_bits(self.image_shape)
        return payload + label_task_bits(self.num_classes, self.num_tasks) + attribute_bits(self.attributes)

    def items_for_bits(self, bits: float) -> int:
        """Items of this memory's kind (not mixed) that ``bits`` holds, as one buffer (ValueError when none fits)."""
        if self.kind == "mixed":
            raise ValueError("a mixed memory has no single item size")
        return capacity_for_budget(bits, self.item_bits, self.codec.packed_bits(self.image_shape))

    def _new_buffer(self, budget_bits: float | None = None, capacity: int | None = None, seed: int = 0) -> ExperienceBuffer:
        return self.codec.new_buffer(self.image_shape, budget_bits, capacity, num_classes=self.num_classes, num_tasks=self.num_tasks,
                                     seed=seed, device=self.storage_device, attributes=self.attributes)

    # -- encoding and decoding ------------------------------------------------------------------------------
    def training_view(self, x: torch.Tensor) -> torch.Tensor:
        """The incoming images as the classifier trains on them: with ``reconstruct_incoming``, decoded from their
        codes (what storing them would keep), so that incoming and replayed images are both recollections and the
        classifier cannot tell old classes from new ones by sharpness; otherwise x itself."""
        if not self.reconstruct_incoming:
            return x
        with evaluating(self.generator):
            return self.generator.reconstruct(x).to(x.dtype)

    # -- the interface strategies use -------------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(len(s) for s in self.stores.values())

    @property
    def capacity(self) -> int:
        return sum(s.capacity for s in self.stores.values())

    def bits_used(self) -> int:
        return sum(s.bits_used() for s in self.stores.values())

    def add(self, x: torch.Tensor, y: torch.Tensor, task: int, attributes: Mapping[str, torch.Tensor] | None = None) -> list[Written]:
        """Offer a batch of one task (float images in [0, 1]) to the stores its layout assigns it; returns where items
        landed. ``attributes``: the per-slot attributes asked for at ``build``, one row per item."""
        if self.image_shape is None:
            raise ValueError("memory used before build()")
        if self.layout != "per_class":
            return [self._add_to(0 if self.layout == "shared" else int(task), x, y, task, attributes, None)]
        return [self._add_to(int(c), x, y, task, attributes, torch.nonzero(y == c).squeeze(1)) for c in y.unique().tolist()]

    def _add_to(self, key: int, x: torch.Tensor, y: torch.Tensor, task: int, attributes: Mapping[str, torch.Tensor] | None,
                rows: torch.Tensor | None) -> Written:
        if key not in self.stores:
            self.stores[key] = self._new_buffer(self.store_budget(), seed=self.seed + 1 + key)
        pick = (lambda t: t) if rows is None else (lambda t: t[rows.to(t.device)])
        attributes = None if attributes is None else {k: pick(v).detach() for k, v in attributes.items()}
        sources, slots = self.stores[key].add_encoded(pick(x), self.codec.encode, pick(y).detach(), int(task), attributes)
        return Written(key, sources if rows is None else rows.cpu()[sources], slots)

    def set_store(self, key: int, x: torch.Tensor, y: torch.Tensor, task: int, capacity: int) -> None:
        """Replace store ``key`` by exactly the items x (in order), in a buffer of ``capacity`` items (iCaRL's exemplars)."""
        if len(x) > capacity:
            raise ValueError(f"{len(x)} items do not fit a store of {capacity}")
        if self.attributes:
            raise ValueError(f"set_store keeps no per-slot attributes, but this memory keeps {sorted(self.attributes)}")
        store = self._new_buffer(capacity=capacity, seed=self.seed + 1 + key)
        if len(x):
            store.add(self.codec.encode(x), y.detach(), int(task))
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

    def draw(self, n: int) -> list[tuple[ExperienceBuffer, BufferSample]]:
        """n stored items drawn uniformly over every store: (store, BufferSample) per store drawn from. One store is
        drawn from by the memory's sampling strategy; several, uniformly."""
        return [(self.stores[key], drawn) for key, drawn in self._draw(n)]

    def _draw(self, n: int) -> list[tuple[int, BufferSample]]:
        if n < 1:
            raise ValueError(f"number of items to sample must be >= 1, got {n}")
        keys = [k for k, s in self.stores.items() if len(s)]
        if not keys:
            raise ValueError("cannot sample from an empty memory: add items first")
        if len(keys) == 1:
            return [(keys[0], self.sampling.select(self.stores[keys[0]], n))]
        sizes = torch.tensor([len(self.stores[k]) for k in keys], dtype=torch.float64)
        counts = torch.bincount(torch.multinomial(sizes, n, replacement=True, generator=self._rng), minlength=len(keys))
        return [(key, self.stores[key].sample(count)) for key, count in zip(keys, counts.tolist()) if count]

    def sample(self, n: int, device: torch.device | str = "cpu") -> Replayed:
        """n items drawn uniformly over everything stored (with replacement), decoded to images on ``device``."""
        return self.sample_batches(1, n, device)[0]

    def sample_batches(self, count: int, n: int, device: torch.device | str = "cpu") -> list[Replayed]:
        """``count`` draws of n items each, all drawn before any is decoded, and decoded in one call per store (the
        N replay batches of one incoming batch)."""
        device = torch.device(device)
        draws = [self._draw(n) for _ in range(count)]
        images: dict[tuple[int, int], torch.Tensor] = {}  # (draw, store key) -> its decoded items
        for key in dict.fromkeys(k for parts in draws for k, _ in parts):
            store, mine = self.stores[key], [(i, d) for i, parts in enumerate(draws) for k, d in parts if k == key]
            if isinstance(store, MixedBuffer):  # a (codes, images) pair per draw
                decoded = [self.codec.decode(store, d.data, device) for _, d in mine]
            else:
                decoded = self.codec.decode(store, join([d.data for _, d in mine]), device)
                decoded = decoded.split([len(d.labels) for _, d in mine]) if len(mine) > 1 else [decoded]
            images.update({(i, key): x for (i, _), x in zip(mine, decoded)})
        return [Replayed(join([images[i, key] for key, _ in parts]), join([d.labels for _, d in parts]).to(device),
                         join([d.tasks for _, d in parts]).to(device), join([torch.full_like(d.slots, key) for key, d in parts]),
                         join([d.slots for _, d in parts]),
                         {name: join([d.attributes[name] for _, d in parts]).to(device) for name in self.attributes})
                for i, parts in enumerate(draws)]

    def replay_batches(self, batch: Mapping[str, torch.Tensor], count: int, n: int | None = None) -> list[dict[str, torch.Tensor]]:
        """The ``count`` training batches of one incoming ``batch`` {"x", "y"[, "task"]}: its examples followed by n
        replayed items each (None: as many as it holds), all drawn and decoded now, before the first update (paper,
        section 2.4); the incoming batch alone while the memory is empty. What experience replay and the
        ``ReplayInterleaving`` callback train on."""
        x = batch["x"]
        if not len(self):
            return [mix_replayed(batch, None)] * count
        return [mix_replayed(batch, (d.x, d.y, d.task)) for d in self.sample_batches(count, n or len(x), x.device)]

    def contents(self, task: int | None = None, device: torch.device | str = "cpu", key: int | None = None,
                 limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every stored item (of ``task``, of store ``key``, when given; the first ``limit`` of each store, when given:
        only those are decoded) as (images, labels, tasks) on ``device``."""
        xs, ys, ts = [], [], []
        device = torch.device(device)
        for k, store in self.stores.items():
            if not len(store) or (key is not None and k != key) or (self.layout == "per_task" and task is not None and k != task):
                continue
            data, labels, tasks = stored_items(store)
            keep = torch.ones(len(labels), dtype=torch.bool) if task is None else tasks.cpu() == task
            if limit is not None:
                keep &= keep.cumsum(0) <= limit
            if not keep.any():
                continue
            xs.append(self.codec.decode(store, select(data, keep), device))
            ys.append(labels.cpu()[keep].long())
            ts.append(tasks.cpu()[keep].long())
        if not xs:
            empty = torch.empty(0, dtype=torch.long, device=device)
            return torch.empty(0, *self.image_shape, device=device), empty, empty
        return torch.cat(xs), torch.cat(ys).to(device), torch.cat(ts).to(device)

    # -- the generator's own online training ----------------------------------------------------------------------
    def end_task(self, task: int) -> None:
        if self.online is not None:
            self.online.end_task(task)

    def generator_loss(self, x: torch.Tensor) -> torch.Tensor:
        """The online generator's loss on incoming x and recollections drawn from this memory (``OnlineGenerator.loss``)."""
        return self.online.loss(x, self.draw if len(self) else None)

    def generator_bits(self) -> int:
        return 0 if self.online is None else self.online.parameter_bits()

    # -- checkpoints ------------------------------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {"stores": {k: (s.capacity, s.state_dict()) for k, s in self.stores.items()}, "rng": self._rng.get_state(),
                "layout": self.layout}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if self.image_shape is None:
            raise ValueError("build the memory (learner setup) before loading its state")
        self.stores = {key: self._store_from_state(key, capacity, buffer_state) for key, (capacity, buffer_state) in state["stores"].items()}
        self._rng.set_state(state["rng"])

    def _store_from_state(self, key: int, capacity: int, state: dict[str, Any]) -> ExperienceBuffer:
        """Store ``key`` as a saved ``state`` says, on the storage device (the current store itself when it fits)."""
        current = self.stores.get(key)
        store = current if current is not None and current.capacity == capacity and current.device == self.storage_device else (
            self._new_buffer(self.store_budget(), seed=self.seed + 1 + key) if self.kind == "mixed"
            else self._new_buffer(capacity=capacity, seed=self.seed + 1 + key))
        store.load_state_dict(state)
        return store

    def place(self, device: torch.device | str) -> None:
        """Keep the stores on ``device`` (the learner's), contents and random states unchanged, unless ``memory.device``
        pins them: on a GPU, draws and writes then never leave it."""
        device = torch.device(device)
        if self.requested_device is not None or device == self.storage_device:
            return
        self.storage_device = device
        self.stores = {key: self._store_from_state(key, store.capacity, store.state_dict()) for key, store in self.stores.items()}


def join(parts: list[torch.Tensor]) -> torch.Tensor:
    """The parts concatenated (a single part as it is: the common case of one store costs no copy)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


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


__all__ = ["LAYOUTS", "EpisodicMemory", "Replayed", "Written"]
