"""Experience buffers that spend an exact number of bits: recollections (packed codes), lossless images, or both.

Every buffer keeps a uniform sample of the stream it was fed with reservoir sampling (Vitter's algorithm R):
item i (0-based, counting every item ever offered) fills slot i while the buffer is not full, and after that
replaces slot j when a uniform draw j in [0, i] falls below the capacity. A batch is inserted at once:
one float64 draw per item past the fill phase, in stream order, then the writes applied with the last writer
winning each slot. Algorithm R's draws do not depend on the buffer's contents, and applying them in order
leaves each slot holding the last item that drew it, so a batch leaves exactly the state the same items
offered one by one would leave (same generator, same draws; tests check it bit for bit).

Distributed data parallel: nothing is communicated. Each rank owns its buffer and feeds it its own shard of
the stream (what a DistributedSampler hands it), so each rank holds a uniform reservoir over its shard, the
shards' reservoirs are disjoint, and together they hold world_size * capacity items, a sample stratified by
rank. Give each rank its own seed so that their draws are independent: ``RecollectionWriter`` reseeds rank r's
buffer with ``seed + r`` (``reseed``).

Per-slot attributes: a buffer built with ``attributes={"logits": ((10,), torch.float16)}`` keeps, beside each
item, one tensor of that shape and dtype (what a strategy needs of the moment the item was stored: DER++'s logits),
written by ``add`` at the item's slot, drawn with it (``BufferSample.attributes``), and counted in the item's bits
at the dtype it is stored in, so a budget pays for everything the memory keeps. ``add`` returns where the batch
landed (``Writes``), so nothing outside a buffer needs its private state.

Exact storage: a RecollectionBuffer keeps its codes as one bitstream (``packing.pack_stream``), item i at bits
[i*B, (i+1)*B) with B = c * ceil(log2 l), so n items take ceil(n*B / 8) bytes, no padding per item. The stream
is read and written in blocks of k = 8 / gcd(B, 8) items (a whole number of bytes, k <= 8): replacing slot j
rewrites j's block (read, unpack, set the item, pack, write back), for all the slots of a batch at once.
"""

from __future__ import annotations

import math
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch

from lossy_memory.memory.budget import capacity_for_budget, code_bits, label_task_bits, storage_dtype
from lossy_memory.memory.packing import (
    _block_items,
    _pack,
    _pack_stream,
    _unpack,
    _unpack_stream,
    bits_per_variable,
    bytes_per_item,
    check_codes,
    require_in_range,
)

Decoder = Callable[[torch.Tensor], torch.Tensor]
SMALL_BATCH = 64  # reservoir writes of batches up to this size are worked out in plain Python (_reservoir_writes)


Attributes = Mapping[str, tuple[Sequence[int], torch.dtype]]  # name -> (shape of one item's value, stored dtype)


class BufferSample(NamedTuple):
    """Items drawn from a buffer. ``data``: codes LongTensor [n, c] (recollections), uint8 images [n, C, H, W]
    (lossless), or the pair (codes, images) of a MixedBuffer, whose labels/tasks/slots list the codes' items first.
    ``slots``: where each item sits in the buffer (None for codes drawn from the prior). ``attributes``: each
    per-slot attribute of the drawn items (empty when the buffer keeps none)."""

    data: Any
    labels: torch.Tensor | None
    tasks: torch.Tensor | None
    slots: torch.Tensor | None
    attributes: Mapping[str, torch.Tensor] = {}


class Writes(NamedTuple):
    """Where ``add`` put a batch: batch positions ``sources`` landed in ``slots`` (ascending; items the reservoir
    passed over are in neither). Slots of a MixedBuffer's lossless part follow its lossy part's capacity."""

    sources: torch.Tensor
    slots: torch.Tensor


_NONE = torch.zeros(0, dtype=torch.int64)  # no batch positions, no slots (never written to)


def _on(index: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host-made index tensor on ``device``, without waiting for the device (a copy from the host is queued)."""
    return index.to(device, non_blocking=True)


def quantize_images(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] as uint8: the nearest of 256 levels (what a lossless store keeps)."""
    return (images * 255).round().to(torch.uint8)


def attribute_bits(attributes: Attributes | None) -> int:
    """Bits one item's attributes take at their stored dtypes."""
    return sum(8 * torch.empty((), dtype=dtype).element_size() * math.prod(shape) for shape, dtype in (attributes or {}).values())


class ExperienceBuffer(ABC):
    """What the training loop sees: add a batch, draw a batch, turn drawn data into images, count bits.

    See the module docstring for the reservoir and for DDP. Bad input raises ValueError and leaves the buffer
    unchanged. ``seed`` (an int attribute) is what the buffer's random generators started from.
    """

    seed: int

    @property
    @abstractmethod
    def capacity(self) -> int: ...

    @property
    @abstractmethod
    def num_seen(self) -> int:
        """Items offered so far (the stream position the reservoir draws against)."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def bits_used(self) -> int:
        """Bits held by the stored items (payload, labels and task ids)."""

    @abstractmethod
    def add(self, items: Any, labels: torch.Tensor, tasks: torch.Tensor | int,
            attributes: Mapping[str, torch.Tensor] | None = None) -> Writes:
        """Offer a batch to the reservoir; returns where its items landed."""

    @abstractmethod
    def sample(self, n: int) -> BufferSample:
        """n stored items drawn uniformly with replacement ("buffer sampling")."""

    @abstractmethod
    def share(self, ranks: int) -> None:
        """Keep 1/``ranks`` of the budget: one DDP process's share of the run's (before anything is stored)."""

    @abstractmethod
    def decode(self, decoder_fn: Decoder | None, data: Any, batch_size: int = 1024) -> torch.Tensor:
        """Images in [0, 1] for sampled ``data``, decoding in batches without gradients."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def reseed(self, seed: int) -> None:
        """Restart the random generators from ``seed``, as if the buffer had been built with it (contents are kept)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be reseeded")

    def replay(self, n: int, decoder_fn: Decoder | None = None, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images, labels, tasks) of n items drawn uniformly: what a rehearsal step trains on."""
        drawn = self.sample(n)
        return self.decode(decoder_fn, drawn.data, batch_size), drawn.labels, drawn.tasks


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _check_seed(seed: int) -> int:
    try:
        if isinstance(seed, bool):
            raise TypeError
        return operator.index(seed)
    except TypeError:
        raise ValueError(f"seed must be an integer, got {seed!r}") from None


def _check_count(n: int, what: str) -> int:
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"{what} must be an integer >= 0, got {n!r}")
    return int(n)


class ReservoirBuffer(ExperienceBuffer):
    """Reservoir of fixed-size items plus a label and a task id per item. This class runs the reservoir, labels,
    task ids, sampling and state dicts; subclasses say how items are stored (the storage hooks below).

    Random draws come from two CPU generators, one for insertion and one for sampling, so how often a run
    samples never changes what it stores. Both travel in ``state_dict``.

    ``payload_bits``: bits of an item's payload (counted in ``item_bits``); ``packed_bits``: the part of them packed
    into one bitstream of whole bytes, whose last partial byte a budget must leave room for (0: whole bytes).
    ``attributes``: per-slot attributes (module docstring), counted in ``item_bits``.
    """

    def __init__(self, payload_bits: int, packed_bits: int, capacity: int | None, budget_bits: float | None,
                 num_classes: int, num_tasks: int, seed: int, device: str | torch.device, attributes: Attributes | None = None):
        self.num_classes, self.num_tasks = int(num_classes), int(num_tasks)
        self.label_dtype, self.task_dtype = storage_dtype(num_classes), storage_dtype(num_tasks)
        self.attribute_specs = {str(k): (tuple(int(d) for d in shape), dtype) for k, (shape, dtype) in (attributes or {}).items()}
        self.item_bits = int(payload_bits) + label_task_bits(num_classes, num_tasks) + attribute_bits(self.attribute_specs)
        if (capacity is None) == (budget_bits is None):
            raise ValueError(f"give exactly one of capacity and budget_bits, got capacity={capacity}, budget_bits={budget_bits}")
        self.budget_bits, self._packed_bits = budget_bits, int(packed_bits)
        if capacity is None:
            capacity = capacity_for_budget(budget_bits, self.item_bits, packed_bits)
        elif isinstance(capacity, bool) or int(capacity) != capacity or capacity < 1:
            raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}")
        self.device = torch.device(device)
        self.reseed(seed)
        self._allocate(int(capacity))

    def _allocate(self, capacity: int) -> None:
        """Empty storage for ``capacity`` items."""
        self._capacity = capacity
        self._payload = self._empty_payload()
        self._labels = torch.zeros(self._capacity, dtype=self.label_dtype, device=self.device)
        self._tasks = torch.zeros(self._capacity, dtype=self.task_dtype, device=self.device)
        self._attributes = {k: torch.zeros(self._capacity, *shape, dtype=dtype, device=self.device)
                            for k, (shape, dtype) in self.attribute_specs.items()}
        self._num_seen = 0

    def share(self, ranks: int) -> None:
        """Keep 1/``ranks`` of the budget (or of the capacity, for a buffer sized in items): the share of one of the
        ``ranks`` DDP processes that fill a buffer each from their shard, so that the run stores what one process would.
        Only before anything is stored."""
        if len(self):
            raise ValueError("a buffer is shared out between processes before anything is stored in it")
        if self.budget_bits is not None:
            self.budget_bits = self.budget_bits / ranks
            self._allocate(capacity_for_budget(self.budget_bits, self.item_bits, self._packed_bits))
        elif self._capacity < ranks:
            raise ValueError(f"a buffer of {self._capacity} items cannot be shared out between {ranks} processes: raise its capacity")
        else:
            self._allocate(self._capacity // ranks)

    # -- how items are stored (subclasses) ------------------------------------------------------------
    @abstractmethod
    def _check_items(self, items: Any) -> int:
        """Validate incoming items (ValueError naming what is wrong); return how many there are."""

    @abstractmethod
    def _empty_payload(self) -> torch.Tensor:
        """Zeroed storage for ``capacity`` items, on ``device``."""

    @abstractmethod
    def _payload_of(self, n: int) -> torch.Tensor:
        """View of the storage that holds slots [0, n)."""

    @abstractmethod
    def _write_range(self, start: int, items: Any) -> None:
        """Store valid items in slots start, start+1, ... (all of them, and every slot after them, still empty)."""

    @abstractmethod
    def _write_slots(self, slots: torch.Tensor, items: Any) -> None:
        """Store valid item i in slot ``slots[i]``; ``slots``: distinct, ascending, CPU int64."""

    @abstractmethod
    def _read(self, slots: torch.Tensor) -> Any:
        """The items in ``slots`` (CPU int64, repeats allowed): the data ``sample`` returns."""

    @abstractmethod
    def _load_payload(self, payload: Any, n: int) -> torch.Tensor:
        """A state's stored payload of n items, checked (ValueError), as full storage on ``device``."""

    @abstractmethod
    def _config(self) -> dict[str, Any]:
        """What must match for a state to load (shapes, capacity, label ranges)."""

    # -- the interface --------------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def num_seen(self) -> int:
        return self._num_seen

    def __len__(self) -> int:
        return min(self._num_seen, self._capacity)

    def bits_used(self) -> int:
        return len(self) * self.item_bits

    def reseed(self, seed: int) -> None:
        seed = _check_seed(seed)
        self.seed, self._insert_rng, self._sample_rng = seed, _seeded(2 * seed), _seeded(2 * seed + 1)

    @property
    def stored(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Views of the filled part of the storage tensors: (payload, labels, tasks), in slot order."""
        n = len(self)
        return self._payload_of(n), self._labels[:n], self._tasks[:n]

    def add(self, items: Any, labels: torch.Tensor, tasks: torch.Tensor | int,
            attributes: Mapping[str, torch.Tensor] | None = None) -> Writes:
        """Offer a batch to the reservoir; all of it is validated before anything changes. Returns where it landed."""
        labels, tasks, attributes = self._validate(items, labels, tasks, attributes)
        return self._insert(items, labels, tasks, attributes)

    def add_encoded(self, x: torch.Tensor, encode: Callable[[torch.Tensor], Any], labels: torch.Tensor, tasks: torch.Tensor | int,
                    attributes: Mapping[str, torch.Tensor] | None = None) -> Writes:
        """``add(encode(x), ...)`` that encodes only the rows the reservoir writes: the same writes and random draws,
        but the late batches of a long stream, most of which write nothing, cost no encoding at all."""
        n = x.shape[0]
        labels, tasks, attributes = self._validate_ids(n, labels, tasks, attributes)

        def encoded(rows: torch.Tensor | None) -> Any:
            items = encode(x if rows is None else x[_on(rows, x.device)])
            if self._check_items(items) != (n if rows is None else len(rows)):
                raise ValueError(f"encode must return one item per image, got {_describe(items)}")
            return items

        return self._store(encoded, labels, tasks, attributes)

    def sample(self, n: int) -> BufferSample:
        n = _check_count(n, "number of items to sample")
        if len(self) == 0:
            raise ValueError("cannot sample from an empty buffer: add items first")
        return self._gather(torch.randint(len(self), (n,), generator=self._sample_rng))

    def state_dict(self) -> dict[str, Any]:
        payload, labels, tasks = self.stored
        state = {"config": self._config(), "num_seen": self._num_seen, "rows": payload.cpu().clone(),
                 "labels": labels.cpu().clone(), "tasks": tasks.cpu().clone(),
                 "insert_rng": self._insert_rng.get_state(), "sample_rng": self._sample_rng.get_state()}
        if self._attributes:
            state["attributes"] = {k: v[: len(self)].cpu().clone() for k, v in self._attributes.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state bit for bit (contents, count seen, both generators); ValueError if it does not fit."""
        self._restore(self._checked_state(state))

    # -- mechanics ------------------------------------------------------------------------------------
    def _validate(self, items: Any, labels: torch.Tensor, tasks: torch.Tensor | int,
                  attributes: Mapping[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        return self._validate_ids(self._check_items(items), labels, tasks, attributes)

    def _validate_ids(self, n: int, labels: torch.Tensor, tasks: torch.Tensor | int,
                      attributes: Mapping[str, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        labels = self._check_ids(labels, n, self.num_classes, "labels", "num_classes")
        if isinstance(tasks, int) and not isinstance(tasks, bool):  # one task for the batch: check the number itself
            if not 0 <= tasks < self.num_tasks:
                raise ValueError(f"tasks must lie in [0, {self.num_tasks}) (num_tasks={self.num_tasks}), got {tasks}")
        else:
            tasks = self._check_ids(tasks, n, self.num_tasks, "tasks", "num_tasks")
        return labels, tasks, self._check_attributes(attributes, n)

    def _check_attributes(self, attributes: Mapping[str, torch.Tensor] | None, n: int) -> dict[str, torch.Tensor]:
        given = dict(attributes or {})
        if given.keys() != self.attribute_specs.keys():
            raise ValueError(f"this buffer keeps the per-slot attributes {sorted(self.attribute_specs)}: add must give exactly "
                             f"those, got {sorted(given)}")
        for name, (shape, _) in self.attribute_specs.items():
            value = given[name]
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != (n, *shape):
                raise ValueError(f"attribute {name!r} must be a tensor of shape {[n, *shape]} (one per item), got {_describe(value)}")
        return given

    @staticmethod
    def _check_ids(ids: torch.Tensor, n: int, limit: int, what: str, setting: str) -> torch.Tensor:
        if not isinstance(ids, torch.Tensor) or ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise ValueError(f"{what} must be an integer tensor, got {getattr(ids, 'dtype', type(ids).__name__)}")
        if ids.shape != (n,):
            raise ValueError(f"{what} must have shape [{n}] (one per item), got {tuple(ids.shape)}")
        require_in_range(ids, limit, lambda low, high: f"{what} must lie in [0, {limit}) ({setting}={limit}), got values in [{low}, {high}]")
        return ids

    def _insert(self, items: Any, labels: torch.Tensor, tasks: torch.Tensor | int, attributes: Mapping[str, torch.Tensor]) -> Writes:
        return self._store(lambda rows: items if rows is None else items[_on(rows, items.device)], labels, tasks, attributes)

    def _store(self, take: Callable[[torch.Tensor | None], Any], labels: torch.Tensor, tasks: torch.Tensor | int,
               attributes: Mapping[str, torch.Tensor]) -> Writes:
        """Write validated labels, tasks and attributes with the items ``take(rows)`` gives for the batch rows the
        reservoir writes (``rows`` None: every row). If ``take`` fails nothing has changed, the random draws included."""
        n = labels.shape[0]
        if n == 0:
            return Writes(_NONE, _NONE)
        if self._num_seen + n <= self._capacity:  # still filling: the batch lands, in order, on the next n slots
            items = take(None)
            sources, slots = torch.arange(n), torch.arange(self._num_seen, self._num_seen + n)
            at = slice(self._num_seen, self._num_seen + n)
            self._write_range(self._num_seen, items)
            self._labels[at], self._tasks[at] = labels, tasks
            for name, value in attributes.items():
                self._attributes[name][at] = value.detach()
        else:
            draws = self._insert_rng.get_state()
            sources, slots = self._reservoir_writes(n)
            if not len(slots):  # the reservoir passes the whole batch over
                self._num_seen += n
                return Writes(sources, slots)
            try:
                items = take(sources)
            except Exception:
                self._insert_rng.set_state(draws)
                raise
            at = _on(slots, self.device)
            self._write_slots(slots, items)
            self._labels[at] = labels[_on(sources, labels.device)].to(self.device, self.label_dtype)
            self._tasks[at] = tasks if isinstance(tasks, int) else tasks[_on(sources, tasks.device)].to(self.device, self.task_dtype)
            for name, value in attributes.items():
                self._attributes[name][at] = value.detach()[_on(sources, value.device)].to(self.device, self._attributes[name].dtype)
        self._num_seen += n
        return Writes(sources, slots)

    def _reservoir_writes(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch positions, slots) that algorithm R writes for the next n items, one write per slot (the last).

        Slots come out distinct and ascending, so writes that share a storage block can be applied together. A small
        batch (an incoming batch) takes the same draws through plain Python, which is several times faster there
        than a dozen tensor ops on ten elements, and gives the same writes (IEEE double products, truncation)."""
        if n <= SMALL_BATCH:
            late = max(0, self._num_seen + n - max(self._capacity, self._num_seen))
            draws = torch.rand(late, dtype=torch.float64, generator=self._insert_rng).tolist()
            writer: dict[int, int] = {}
            for k in range(n):
                i = self._num_seen + k
                slot = i if i < self._capacity else min(int(draws[k - (n - late)] * (i + 1)), i)
                if slot < self._capacity:
                    writer[slot] = k  # the last writer of a slot wins
            if not writer:
                return _NONE, _NONE
            slots = sorted(writer)
            return torch.tensor([writer[s] for s in slots], dtype=torch.int64), torch.tensor(slots, dtype=torch.int64)
        position = torch.arange(self._num_seen, self._num_seen + n, dtype=torch.int64)
        late = position >= self._capacity
        slots = position.clone()
        stream = position[late]
        draws = torch.rand(stream.shape[0], dtype=torch.float64, generator=self._insert_rng)
        # j uniform in [0, i]: floor(u * (i + 1)); the clamp guards u * (i + 1) rounding up to i + 1.
        slots[late] = torch.minimum((draws * (stream + 1).double()).long(), stream)
        kept = torch.nonzero(slots < self._capacity).squeeze(1)
        slots, order = torch.sort(slots[kept], stable=True)  # stable: within a slot, stream order is kept
        last = torch.ones_like(slots, dtype=torch.bool)
        last[:-1] = slots[1:] != slots[:-1]
        return kept[order][last], slots[last]

    def _gather(self, slots: torch.Tensor) -> BufferSample:
        # index_select, not advanced indexing: a third of the time on a replay draw's few rows
        at = _on(slots, self.device)
        return BufferSample(self._read(slots), self._labels.index_select(0, at).long(), self._tasks.index_select(0, at).long(), at,
                            {k: v.index_select(0, at) for k, v in self._attributes.items()})

    def _checked_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """Validate a state dict against this buffer; return what ``_restore`` installs (nothing changes here)."""
        if not isinstance(state, dict) or not {"config", "num_seen", "rows", "labels", "tasks", "insert_rng", "sample_rng"} <= state.keys():
            raise ValueError(f"not a {type(self).__name__} state dict (keys: {sorted(state) if isinstance(state, dict) else type(state).__name__})")
        mine, theirs = self._config(), state["config"] if isinstance(state["config"], dict) else {}
        mismatched = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
        if mismatched:
            detail = ", ".join(f"{k}: saved {saved!r} vs this buffer {here!r}" for k, (saved, here) in mismatched.items())
            raise ValueError(f"cannot load a buffer state of another shape ({detail})")
        num_seen = _check_count(state["num_seen"], "num_seen")
        n = min(num_seen, self._capacity)
        for key, dtype in (("labels", self.label_dtype), ("tasks", self.task_dtype)):
            t = state[key]
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != (n,) or t.dtype != dtype:
                raise ValueError(f"state {key!r} must be a {dtype} tensor of shape [{n}], got {_describe(t)}")
        for key in ("labels", "tasks"):
            limit = self.num_classes if key == "labels" else self.num_tasks
            if n and (state[key].min() < 0 or state[key].max() >= limit):
                raise ValueError(f"state {key!r} holds values outside [0, {limit})")
        payload = self._load_payload(state["rows"], n)
        generators = []
        for key in ("insert_rng", "sample_rng"):
            generator = torch.Generator()
            try:
                generator.set_state(state[key])
            except (RuntimeError, TypeError) as error:
                raise ValueError(f"state {key!r} is not a CPU generator state: {error}") from error
            generators.append(generator)
        labels, tasks = torch.zeros_like(self._labels), torch.zeros_like(self._tasks)
        labels[:n], tasks[:n] = state["labels"].to(self.device), state["tasks"].to(self.device)
        saved = state.get("attributes", {})
        attributes = {}
        for name, (shape, dtype) in self.attribute_specs.items():
            value = saved.get(name) if isinstance(saved, dict) else None
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != (n, *shape) or value.dtype != dtype:
                raise ValueError(f"state attribute {name!r} must be a {dtype} tensor of shape {[n, *shape]}, got {_describe(value)}")
            attributes[name] = torch.zeros_like(self._attributes[name])
            attributes[name][:n] = value.to(self.device)
        return {"payload": payload, "labels": labels, "tasks": tasks, "num_seen": num_seen, "rngs": generators,
                "attributes": attributes}

    def _restore(self, checked: dict[str, Any]) -> None:
        self._payload, self._labels, self._tasks = checked["payload"], checked["labels"], checked["tasks"]
        self._attributes = checked["attributes"]
        self._num_seen = checked["num_seen"]
        self._insert_rng, self._sample_rng = checked["rngs"]


def _attribute_config(specs: Mapping[str, tuple[tuple[int, ...], torch.dtype]]) -> dict[str, Any]:
    """The attributes' part of a buffer's config (nothing when it keeps none, so older states still load)."""
    return {"attributes": {k: [list(shape), str(dtype)] for k, (shape, dtype) in specs.items()}} if specs else {}


def _describe(t: Any) -> str:
    return f"{t.dtype} {list(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__


class RecollectionBuffer(ReservoirBuffer):
    """Recollections: c categorical codes of l values per item at exactly c * ceil(log2 l) bits, plus label and task
    id in the smallest integer dtypes that fit.

    The codes of all slots form one bitstream (slot i at bits [i*B, (i+1)*B), B = c * ceil(log2 l); see
    ``packing``): ``capacity`` items take ceil(capacity * B / 8) bytes, at most 7 bits of slack in all.
    ``stored[0]`` is the stream of the filled slots (``stored_codes()`` unpacks it) and ``state_dict()["rows"]``
    a copy of it. The stream is accessed in blocks of ``block_items`` = 8 / gcd(B, 8) items (``block_bytes``
    bytes each; the last block may be cut short where the stream ends).

    Give ``capacity`` (items) or ``budget_bits`` (total bits, codes + labels + task ids; the capacity is the most
    items whose codes, last partial byte included, and labels and task ids fit). ``sample`` returns codes;
    ``decode`` turns them into images through the generator's decoder.
    """

    def __init__(self, c: int, l: int, capacity: int | None = None, budget_bits: float | None = None,
                 num_classes: int = 10, num_tasks: int = 1, seed: int = 0, device: str | torch.device = "cpu",
                 attributes: Attributes | None = None):
        self.code_bits = code_bits(c, l)  # validates c and l
        self.c, self.l, self.bits_per_variable = int(c), int(l), bits_per_variable(l)
        self.block_items = _block_items(self.code_bits)
        self.block_bytes = self.block_items * self.code_bits // 8
        super().__init__(self.code_bits, self.code_bits, capacity, budget_bits, num_classes, num_tasks, seed, device, attributes)

    def stored_codes(self) -> torch.Tensor:
        """Codes of the filled slots, LongTensor [len, c] in slot order."""
        n = len(self)
        return _unpack_stream(self._payload_of(n), n, self.c, self.bits_per_variable)

    # -- storage: one bitstream, read and written in blocks -------------------------------------------
    def _stream_bytes(self, n: int) -> int:
        return -(-n * self.code_bits // 8)

    def _check_items(self, codes: torch.Tensor) -> int:
        check_codes(codes, self.c, self.l)
        return codes.shape[0]

    def _empty_payload(self) -> torch.Tensor:
        return torch.zeros(self._stream_bytes(self._capacity), dtype=torch.uint8, device=self.device)

    def _payload_of(self, n: int) -> torch.Tensor:
        return self._payload[: self._stream_bytes(n)]

    def _write_range(self, start: int, codes: torch.Tensor) -> None:
        """Pack the items from the start of ``start``'s block on (earlier items of that block unpacked and kept) and
        write them as one byte range; the bits after the last item belong to empty slots and stay zero."""
        k = self.block_items
        first = start - start % k
        codes = codes.to(self.device)
        if first < start:
            kept = self._unpack_blocks(self._read_blocks(torch.tensor([first // k])))[: start - first]
            codes = torch.cat([kept, codes.to(kept.dtype)])
        stream = _pack_stream(codes, self.bits_per_variable)
        begin = first // k * self.block_bytes
        self._payload[begin : begin + stream.shape[0]] = stream

    def _write_slots(self, slots: torch.Tensor, codes: torch.Tensor) -> None:
        """Read-modify-write of the blocks holding ``slots``: each touched block is read and unpacked once, every
        write landing in it is set (slots are distinct, so no two writes share a position), and it is packed and
        written back once. Distinct slots come from the reservoir keeping only the last writer of each slot."""
        k, b = self.block_items, self.bits_per_variable
        codes = codes.to(self.device)
        if k == 1:  # a block is one item: nothing else in it to keep
            self._write_blocks(slots, _pack(codes, b))
            return
        blocks, block_of = torch.unique_consecutive(slots // k, return_inverse=True)  # slots ascending: blocks too
        held = self._unpack_blocks(self._read_blocks(blocks)).view(len(blocks), k, self.c)
        held[_on(block_of, self.device), _on(slots % k, self.device)] = codes.to(held.dtype)
        self._write_blocks(blocks, _pack(held.view(len(blocks), k * self.c), b))

    def _read(self, slots: torch.Tensor) -> torch.Tensor:
        """Gather the blocks of the drawn slots, unpack them, pick each slot's item out of its block."""
        k = self.block_items
        if k == 1:
            return _unpack(self._read_blocks(slots), self.c, self.bits_per_variable)
        held = self._unpack_blocks(self._read_blocks(slots // k)).view(len(slots), k, self.c)
        return held[torch.arange(len(slots), device=self.device), _on(slots % k, self.device)]

    def _unpack_blocks(self, blocks: torch.Tensor) -> torch.Tensor:
        """uint8 [m, block_bytes] -> codes [m * block_items, c] (a fresh tensor)."""
        return _unpack(blocks, self.block_items * self.c, self.bits_per_variable).reshape(-1, self.c)

    def _read_blocks(self, blocks: torch.Tensor) -> torch.Tensor:
        """Blocks (CPU int64, any order, repeats allowed) -> uint8 [len(blocks), block_bytes]; a block the stream
        ends inside reads as zeros past the end (its missing items are empty slots)."""
        table, whole = self._block_table()
        if len(blocks) == 0 or int(blocks.max()) < whole:
            return table[_on(blocks, self.device)]
        out = torch.zeros(len(blocks), self.block_bytes, dtype=torch.uint8, device=self.device)
        cut = blocks == whole
        inside = torch.nonzero(~cut).squeeze(1)
        out[_on(inside, self.device)] = table[_on(blocks[inside], self.device)]
        tail = self._payload[whole * self.block_bytes :]
        out[_on(torch.nonzero(cut).squeeze(1), self.device), : tail.shape[0]] = tail
        return out

    def _write_blocks(self, blocks: torch.Tensor, data: torch.Tensor) -> None:
        """Write uint8 [len(blocks), block_bytes] to distinct blocks (CPU int64); a block the stream ends inside gets
        only its bytes up to the end of the stream."""
        table, whole = self._block_table()
        if len(blocks) == 0 or int(blocks.max()) < whole:
            table[_on(blocks, self.device)] = data
            return
        cut = blocks == whole
        inside = torch.nonzero(~cut).squeeze(1)
        table[_on(blocks[inside], self.device)] = data[_on(inside, self.device)]
        tail = self._payload[whole * self.block_bytes :]
        tail.copy_(data[int(torch.nonzero(cut)[0, 0]), : tail.shape[0]])

    def _block_table(self) -> tuple[torch.Tensor, int]:
        """(view of the storage's whole blocks as rows [whole, block_bytes], whole)."""
        whole = self._payload.shape[0] // self.block_bytes
        return self._payload[: whole * self.block_bytes].view(whole, self.block_bytes), whole

    def _load_payload(self, payload: Any, n: int) -> torch.Tensor:
        """The stream of n items, checked: past the last item every bit is zero, and every code lies in [0, l).
        States saved before the stream layout (one byte-padded row per item, [n, bytes_per_item(c, l)]) load too."""
        nbytes = self._stream_bytes(n)
        b = self.bits_per_variable
        rows = (n, bytes_per_item(self.c, self.l))
        if isinstance(payload, torch.Tensor) and payload.dtype == torch.uint8 and tuple(payload.shape) == rows and payload.dim() == 2:
            codes = _unpack(payload.to(self.device), self.c, b)
            stream = _pack_stream(codes, b)
        elif isinstance(payload, torch.Tensor) and payload.dtype == torch.uint8 and tuple(payload.shape) == (nbytes,):
            stream, codes = payload.to(self.device), None
            spare = n * self.code_bits % 8
            if spare and int(stream[-1]) >> spare:
                raise ValueError(f"state 'rows' has bits set past its last item (the last {8 - spare} bits of byte {nbytes - 1})")
        else:
            raise ValueError(f"state 'rows' must be a torch.uint8 tensor of shape [{nbytes}] (the codes of {n} items of "
                             f"{self.code_bits} bits as one stream), got {_describe(payload)}")
        if n and self.l != 1 << b:  # b-bit fields can hold values >= l
            codes = _unpack_stream(stream, n, self.c, b) if codes is None else codes
            if int(codes.max()) >= self.l:
                raise ValueError(f"state 'rows' holds codes outside [0, {self.l})")
        out = self._empty_payload()
        out[:nbytes] = stream
        return out

    def _config(self) -> dict[str, Any]:
        return {"kind": "recollection", "c": self.c, "l": self.l, "capacity": self.capacity,
                "num_classes": self.num_classes, "num_tasks": self.num_tasks, **_attribute_config(self.attribute_specs)}

    # -- drawing and decoding ---------------------------------------------------------------------------
    def sample_codes(self, n: int) -> torch.Tensor:
        """n codes drawn uniformly from all l^c ("code sampling": the generator's prior, nothing stored)."""
        n = _check_count(n, "number of codes to sample")
        return torch.randint(self.l, (n, self.c), generator=self._sample_rng).to(self.device)

    def decode(self, decoder_fn: Decoder | None, data: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Images from codes [n, c] through ``decoder_fn`` (e.g. ``DiscreteVAE.decode``), ``batch_size`` at a time.

        Codes are moved to the device of the decoder's first parameter when ``decoder_fn`` is a bound method
        of a module; otherwise they are passed where they are.
        """
        if decoder_fn is None:
            raise ValueError("a RecollectionBuffer needs a decoder_fn to turn codes into images")
        check_codes(data, self.c, self.l)
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        device = _decoder_device(decoder_fn)
        with torch.no_grad():
            return torch.cat([decoder_fn(chunk.to(device or chunk.device)) for chunk in data.split(int(batch_size))])


def _decoder_device(decoder_fn: Decoder) -> torch.device | None:
    module = getattr(decoder_fn, "__self__", decoder_fn)
    if isinstance(module, torch.nn.Module):
        parameter = next(module.parameters(), None)
        return None if parameter is None else parameter.device
    return None


class LosslessBuffer(ReservoirBuffer):
    """The equal-bits baseline: images stored as uint8 (8 bits per pixel and channel), plus label and task id.

    ``add`` takes uint8 images or floats in [0, 1] (rounded to the nearest of 256 levels); ``decode`` ignores
    the decoder and returns floats in [0, 1]. ``stored[0]`` is the uint8 images [len, C, H, W].
    """

    def __init__(self, image_shape: Sequence[int], capacity: int | None = None, budget_bits: float | None = None,
                 num_classes: int = 10, num_tasks: int = 1, seed: int = 0, device: str | torch.device = "cpu",
                 attributes: Attributes | None = None):
        if len(image_shape) != 3 or any(int(s) != s or s < 1 for s in image_shape):
            raise ValueError(f"image_shape must be [channels, height, width] of positive integers, got {list(image_shape)}")
        self.image_shape = self.row_shape = tuple(int(s) for s in image_shape)
        pixels = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
        super().__init__(8 * pixels, 0, capacity, budget_bits, num_classes, num_tasks, seed, device, attributes)

    def _check_items(self, images: torch.Tensor) -> int:
        self._check_images(images, allow_float=True)
        return images.shape[0]

    def _check_images(self, images: torch.Tensor, allow_float: bool) -> None:
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"images must have shape [N, {', '.join(map(str, self.image_shape))}], got {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            return
        if not (allow_float and images.dtype.is_floating_point):
            raise ValueError(f"images must be uint8{' or floating point in [0, 1]' if allow_float else ''}, got {images.dtype}")
        if images.numel():
            low, high = torch.aminmax(images)
            if not (low >= 0 and high <= 1):  # NaN fails too
                raise ValueError(f"floating-point images must lie in [0, 1], got values in [{float(low)}, {float(high)}]")

    @staticmethod
    def _to_rows(images: torch.Tensor) -> torch.Tensor:
        return images if images.dtype == torch.uint8 else quantize_images(images)

    def _empty_payload(self) -> torch.Tensor:
        return torch.zeros(self._capacity, *self.image_shape, dtype=torch.uint8, device=self.device)

    def _payload_of(self, n: int) -> torch.Tensor:
        return self._payload[:n]

    def _write_range(self, start: int, images: torch.Tensor) -> None:
        self._payload[start : start + images.shape[0]] = self._to_rows(images).to(self.device)

    def _write_slots(self, slots: torch.Tensor, images: torch.Tensor) -> None:
        self._payload[_on(slots, self.device)] = self._to_rows(images).to(self.device)

    def _read(self, slots: torch.Tensor) -> torch.Tensor:
        return self._payload.index_select(0, _on(slots, self.device))

    def _load_payload(self, payload: Any, n: int) -> torch.Tensor:
        shape = (n, *self.image_shape)
        if not isinstance(payload, torch.Tensor) or tuple(payload.shape) != shape or payload.dtype != torch.uint8:
            raise ValueError(f"state 'rows' must be a torch.uint8 tensor of shape {list(shape)}, got {_describe(payload)}")
        out = self._empty_payload()
        out[:n] = payload.to(self.device)
        return out

    def _config(self) -> dict[str, Any]:
        return {"kind": "lossless", "image_shape": list(self.image_shape), "capacity": self.capacity,
                "num_classes": self.num_classes, "num_tasks": self.num_tasks, **_attribute_config(self.attribute_specs)}

    def decode(self, decoder_fn: Decoder | None, data: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        self._check_images(data, allow_float=False)
        return torch.div(data, 255)  # true division: float32 in one op


class MixedBuffer(ExperienceBuffer):
    """One bit budget split between recollections (``lossy_fraction`` of it) and lossless images (the rest).

    Both parts see the whole stream, each with its own reservoir: each is a uniform sample of it (an item may,
    rarely, be kept by both). ``add`` takes items as the pair (images, codes) of the same batch; ``sample``
    draws uniformly over the union of stored items. Use the single buffers for fractions 0 and 1.
    """

    def __init__(self, c: int, l: int, image_shape: Sequence[int], budget_bits: float, lossy_fraction: float,
                 num_classes: int = 10, num_tasks: int = 1, seed: int = 0, device: str | torch.device = "cpu",
                 attributes: Attributes | None = None):
        if not 0 < lossy_fraction < 1:
            raise ValueError(f"lossy_fraction must be in (0, 1) (use RecollectionBuffer or LosslessBuffer for 1 or 0), got {lossy_fraction}")
        lossy_bits = budget_bits * lossy_fraction
        seed = _check_seed(seed)
        # Seeds 3s, 3s+1 for the parts (generator streams 6s..6s+3) and stream 6s+4 here: no two streams coincide.
        try:
            self.lossy = RecollectionBuffer(c, l, budget_bits=lossy_bits, num_classes=num_classes, num_tasks=num_tasks,
                                            seed=3 * seed, device=device, attributes=attributes)
            self.lossless = LosslessBuffer(image_shape, budget_bits=budget_bits - lossy_bits, num_classes=num_classes,
                                           num_tasks=num_tasks, seed=3 * seed + 1, device=device, attributes=attributes)
        except ValueError as error:
            raise ValueError(f"budget of {budget_bits} bits split {lossy_fraction}:{1 - lossy_fraction} (lossy:lossless): {error}") from error
        self.seed, self._sample_rng = seed, _seeded(6 * seed + 4)

    def reseed(self, seed: int) -> None:
        seed = _check_seed(seed)
        self.lossy.reseed(3 * seed)
        self.lossless.reseed(3 * seed + 1)
        self.seed, self._sample_rng = seed, _seeded(6 * seed + 4)

    @property
    def capacity(self) -> int:
        return self.lossy.capacity + self.lossless.capacity

    @property
    def device(self) -> torch.device:
        return self.lossy.device

    def share(self, ranks: int) -> None:
        self.lossy.share(ranks)
        self.lossless.share(ranks)

    @property
    def num_seen(self) -> int:
        return self.lossy.num_seen

    def __len__(self) -> int:
        return len(self.lossy) + len(self.lossless)

    def bits_used(self) -> int:
        return self.lossy.bits_used() + self.lossless.bits_used()

    def add(self, items: tuple[torch.Tensor, torch.Tensor], labels: torch.Tensor, tasks: torch.Tensor | int,
            attributes: Mapping[str, torch.Tensor] | None = None) -> Writes:
        """``items`` = (images, codes) of one batch; the writes of both parts, the lossless part's slots offset."""
        if not isinstance(items, tuple | list) or len(items) != 2:
            raise ValueError(f"MixedBuffer.add takes items=(images, codes), got {type(items).__name__}")
        images, codes = items
        checked = [self.lossy._validate(codes, labels, tasks, attributes),
                   self.lossless._validate(images, labels, tasks, attributes)]  # both before either changes
        lossy, lossless = self.lossy._insert(codes, *checked[0]), self.lossless._insert(images, *checked[1])
        return Writes(torch.cat([lossy.sources, lossless.sources]), torch.cat([lossy.slots, lossless.slots + self.lossy.capacity]))

    def add_encoded(self, x: torch.Tensor, encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], labels: torch.Tensor,
                    tasks: torch.Tensor | int, attributes: Mapping[str, torch.Tensor] | None = None) -> Writes:
        """``add(encode(x), ...)``: both parts' reservoirs see every row, so the whole batch is encoded."""
        return self.add(encode(x), labels, tasks, attributes)

    def sample(self, n: int) -> BufferSample:
        n = _check_count(n, "number of items to sample")
        if len(self) == 0:
            raise ValueError("cannot sample from an empty buffer: add items first")
        picks = torch.randint(len(self), (n,), generator=self._sample_rng)
        in_lossy = picks < len(self.lossy)
        lossy, lossless = self.lossy._gather(picks[in_lossy]), self.lossless._gather(picks[~in_lossy] - len(self.lossy))
        return BufferSample((lossy.data, lossless.data), torch.cat([lossy.labels, lossless.labels]),
                            torch.cat([lossy.tasks, lossless.tasks]), torch.cat([lossy.slots, lossless.slots + self.lossy.capacity]),
                            {k: torch.cat([v, lossless.attributes[k].to(v.device)]) for k, v in lossy.attributes.items()})

    def decode(self, decoder_fn: Decoder | None, data: tuple[torch.Tensor, torch.Tensor], batch_size: int = 1024) -> torch.Tensor:
        codes, images = data
        decoded = self.lossy.decode(decoder_fn, codes, batch_size)
        return torch.cat([decoded, self.lossless.decode(None, images).to(decoded.device)])

    def state_dict(self) -> dict[str, Any]:
        return {"lossy": self.lossy.state_dict(), "lossless": self.lossless.state_dict(), "sample_rng": self._sample_rng.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or not {"lossy", "lossless", "sample_rng"} <= state.keys():
            raise ValueError("not a MixedBuffer state dict (needs 'lossy', 'lossless' and 'sample_rng')")
        lossy, lossless = self.lossy._checked_state(state["lossy"]), self.lossless._checked_state(state["lossless"])
        generator = torch.Generator()
        try:
            generator.set_state(state["sample_rng"])
        except (RuntimeError, TypeError) as error:
            raise ValueError(f"state 'sample_rng' is not a CPU generator state: {error}") from error
        self.lossy._restore(lossy)
        self.lossless._restore(lossless)
        self._sample_rng = generator
