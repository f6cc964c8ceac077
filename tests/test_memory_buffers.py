"""Reservoir buffers: algorithm R exactly (batched = one by one), uniformity, exact storage (one bitstream in blocks),
state round trips, bad input leaving everything unchanged, per-rank (DDP) shards."""

from __future__ import annotations

import io
from functools import partial

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2
from torch.utils.data import DistributedSampler

from lossy_memory.memory import LosslessBuffer, MixedBuffer, RecollectionBuffer
from lossy_memory.memory.budget import capacity_for_budget, occupied_bits, recollection_bits
from lossy_memory.memory.packing import bits_per_variable, bytes_per_item, pack_codes, pack_stream

C, L = 2, 65536  # two 16-bit variables: an item's code can spell its stream position
# (c, l) whose codes spell ids below l**c, one per block size k = 8 / gcd(c * ceil(log2 l), 8):
# 32 bits (k=1), 12 bits (k=2), 30 bits with l not a power of two (k=4), 39 bits (k=8), 15 bits with l=5 (k=8)
ID_LAYOUTS = [(2, 65536), (1, 4096), (3, 1000), (3, 8192), (5, 5)]


def id_codes(ids: torch.Tensor, c: int = C, l: int = L) -> torch.Tensor:
    """Item ids as c base-l digits, least significant first."""
    return torch.stack([ids // l**j % l for j in range(c)], dim=1)


def ids_of(codes: torch.Tensor, l: int) -> torch.Tensor:
    return sum(codes[:, j] * l**j for j in range(codes.shape[1]))


def stored_ids(buffer: RecollectionBuffer) -> torch.Tensor:
    return ids_of(buffer.stored_codes(), buffer.l)


def offer(buffer: RecollectionBuffer, start: int, n: int) -> None:
    ids = torch.arange(start, start + n)
    buffer.add(id_codes(ids, buffer.c, buffer.l), ids % buffer.num_classes, 0)


def snapshot(buffer) -> dict:
    """Everything a buffer holds, compared with torch.equal / ==."""
    state = buffer.state_dict()
    parts = [state] if "rows" in state else [state["lossy"], state["lossless"]]
    return {f"{i}.{k}": v for i, part in enumerate(parts) for k, v in part.items()} | {"mixed_rng": state.get("sample_rng")}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        same = torch.equal(a[key], b[key]) if isinstance(a[key], torch.Tensor) else a[key] == b[key]
        assert same, key


def algorithm_r(capacity: int, n: int, seed: int) -> list[int]:
    """Vitter's algorithm R one item at a time, drawing from the generator a buffer with this seed uses."""
    generator = torch.Generator().manual_seed(2 * seed)
    slots: list[int] = []
    for i in range(n):
        if i < capacity:
            slots.append(i)
            continue
        j = min(int(float(torch.rand(1, dtype=torch.float64, generator=generator)) * (i + 1)), i)
        if j < capacity:
            slots[j] = i
    return slots


# -- reservoir ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("c, l", ID_LAYOUTS)
def test_first_capacity_items_are_kept_verbatim_in_order(c, l):
    buffer = RecollectionBuffer(c, l, capacity=100)
    offer(buffer, 0, 37)  # 37 is not a multiple of any block size: the next batch starts inside a block
    offer(buffer, 37, 63)
    assert len(buffer) == 100 and buffer.num_seen == 100
    assert stored_ids(buffer).tolist() == list(range(100))
    labels = buffer.stored[1]
    assert labels.dtype == torch.uint8 and labels.tolist() == [i % 10 for i in range(100)]


@pytest.mark.parametrize("c, l", ID_LAYOUTS)
def test_the_buffer_holds_exactly_the_stream_of_its_items(c, l):
    """Slot i at bits [i*B, (i+1)*B) of one stream, zero bits after the last item, at every stage of filling."""
    buffer = RecollectionBuffer(c, l, capacity=21, seed=1)
    for start, size in [(0, 3), (3, 1), (4, 10), (14, 7), (21, 40), (61, 5)]:
        offer(buffer, start, size)
        ids = torch.tensor(algorithm_r(21, start + size, 1))
        assert torch.equal(buffer.stored[0], pack_stream(id_codes(ids, c, l), l))
        assert not buffer._payload[buffer.stored[0].numel() :].any()  # the empty slots' bytes


@settings(max_examples=40, deadline=None)
@given(layout=st.sampled_from(ID_LAYOUTS), capacity=st.integers(1, 30), batches=st.lists(st.integers(0, 60), min_size=1, max_size=8),
       seed=st.integers(0, 2**20))
def test_batched_insertion_is_algorithm_r_item_by_item(layout, capacity, batches, seed):
    c, l = layout
    buffer = RecollectionBuffer(c, l, capacity=capacity, seed=seed)
    start = 0
    for size in batches:
        offer(buffer, start, size)
        start += size
    assert stored_ids(buffer).tolist() == algorithm_r(capacity, start, seed)
    one_by_one = RecollectionBuffer(c, l, capacity=capacity, seed=seed)
    for i in range(start):
        offer(one_by_one, i, 1)
    assert_same(snapshot(buffer), snapshot(one_by_one))


@pytest.mark.parametrize("c, l", ID_LAYOUTS)
def test_duplicate_slots_within_a_batch_keep_the_last_writer(c, l):
    buffer = RecollectionBuffer(c, l, capacity=1, seed=3)
    offer(buffer, 0, 500)  # hundreds of items draw slot 0 in this one batch
    assert stored_ids(buffer).tolist() == algorithm_r(1, 500, 3)


@pytest.mark.parametrize("c, l", [(3, 8192), (5, 5)])
def test_many_writes_into_one_block_in_one_batch_all_take_effect(c, l):
    """k = 8 items per block and capacity 16 (two blocks, the second cut short for capacity 13): one batch of 200
    replaces most slots of each block at once, several of them many times over; each keeps its last writer."""
    for capacity in (16, 13):
        buffer = RecollectionBuffer(c, l, capacity=capacity, seed=9)
        assert buffer.block_items == 8
        offer(buffer, 0, capacity)
        offer(buffer, capacity, 200)
        expected = algorithm_r(capacity, capacity + 200, 9)
        assert stored_ids(buffer).tolist() == expected
        assert sum(i >= capacity for i in expected[:8]) >= 2  # the first block got several new items in that one batch


def test_every_item_is_kept_with_equal_probability():
    """After T items each item is stored with probability K/T, and a late item lands in each slot alike.

    Pearson statistics against chi-square quantiles at p = 1e-6: a correct reservoir fails this about once in a
    million runs (sampling without replacement makes the item counts even less dispersed than a multinomial).
    """
    capacity, stream, runs = 10, 60, 3000
    kept = torch.zeros(stream)
    last_slot = torch.zeros(capacity)
    for seed in range(runs):
        buffer = RecollectionBuffer(C, L, capacity=capacity, seed=seed)
        offer(buffer, 0, stream)
        ids = stored_ids(buffer)
        kept[ids] += 1
        last_slot += (ids == stream - 1).float()
    expected = runs * capacity / stream
    assert ((kept - expected) ** 2 / expected).sum() < chi2.ppf(1 - 1e-6, stream - 1)
    n_last = last_slot.sum()
    assert abs(n_last - expected) < 5 * (expected * (1 - capacity / stream)) ** 0.5  # kept with probability K/T
    assert ((last_slot - n_last / capacity) ** 2 / (n_last / capacity)).sum() < chi2.ppf(1 - 1e-6, capacity - 1)


# -- sampling and decoding ---------------------------------------------------------------------------
@pytest.mark.parametrize("c, l", ID_LAYOUTS)
def test_sample_draws_only_stored_items_with_their_labels(c, l):
    buffer = RecollectionBuffer(c, l, capacity=50, num_classes=7, num_tasks=3)
    ids = torch.arange(19)  # ends inside a block for every k > 1
    buffer.add(id_codes(ids, c, l), ids % 7, ids % 3)
    drawn = buffer.sample(200)
    assert drawn.data.dtype == torch.int64 and drawn.data.shape == (200, c)
    item = ids_of(drawn.data, l)
    assert torch.equal(item, drawn.slots) and set(item.tolist()) == set(range(19))
    assert torch.equal(drawn.labels, item % 7) and torch.equal(drawn.tasks, item % 3)
    assert drawn.labels.dtype == torch.int64


def test_sampling_does_not_change_what_is_stored():
    quiet, busy = RecollectionBuffer(C, L, capacity=5, seed=1), RecollectionBuffer(C, L, capacity=5, seed=1)
    for start in range(0, 100, 10):
        offer(quiet, start, 10)
        offer(busy, start, 10)
        busy.sample(7)
    assert torch.equal(stored_ids(quiet), stored_ids(busy))


def test_sample_codes_are_uniform_codes_in_range():
    buffer = RecollectionBuffer(16, 5, capacity=1)
    codes = buffer.sample_codes(4000)
    assert codes.shape == (4000, 16) and codes.min() == 0 and codes.max() == 4
    assert (torch.bincount(codes.flatten(), minlength=5).float() / codes.numel() - 0.2).abs().max() < 0.02


def test_decode_runs_the_decoder_in_batches_without_gradients():
    from lossy_memory.models import DiscreteVAE
    from lossy_memory.nets import CategoricalLatent, ConvDecoder, ConvEncoder

    vae = DiscreteVAE(CategoricalLatent(8, 4), partial(ConvEncoder), partial(ConvDecoder), partial(torch.optim.Adam), image_shape=[1, 28, 28])
    buffer = RecollectionBuffer(8, 4, capacity=64)
    buffer.add(torch.randint(4, (64, 8)), torch.zeros(64, dtype=torch.long), 0)
    calls = []

    def decoder(codes):
        calls.append(len(codes))
        return vae.decode(codes)

    codes = buffer.sample(10).data
    images = buffer.decode(decoder, codes, batch_size=4)
    assert calls == [4, 4, 2] and images.shape == (10, 1, 28, 28) and not images.requires_grad
    assert torch.allclose(images, vae.decode(codes).detach(), atol=1e-6)
    replayed, labels, tasks = buffer.replay(5, vae.decode)
    assert replayed.shape == (5, 1, 28, 28) and 0 <= replayed.min() and replayed.max() <= 1 and labels.shape == tasks.shape == (5,)


# -- exact storage -----------------------------------------------------------------------------------
def tensor_bits(buffer: RecollectionBuffer) -> int:
    return 8 * sum(t.numel() * t.element_size() for t in (buffer._payload, buffer._labels, buffer._tasks))


def test_a_million_items_of_168_binary_variables_take_21_million_bytes_of_codes():
    buffer = RecollectionBuffer(168, 2, capacity=1_000_000, num_classes=10, num_tasks=1)
    codes, labels = torch.randint(2, (100_000, 168), dtype=torch.uint8), torch.zeros(100_000, dtype=torch.long)
    for _ in range(10):
        buffer.add(codes, labels, 0)
    rows, labels, tasks = buffer.stored
    assert len(buffer) == 1_000_000
    assert rows.numel() * rows.element_size() == 21_000_000 == buffer._payload.numel()
    assert labels.numel() * labels.element_size() == 1_000_000 and tasks.numel() * tasks.element_size() == 1_000_000
    assert buffer.bits_used() == 8 * (21_000_000 + 2_000_000) == 1_000_000 * buffer.item_bits == tensor_bits(buffer)


def test_an_item_of_38_binary_variables_costs_38_bits():
    buffer = RecollectionBuffer(38, 2, capacity=8, num_classes=10, num_tasks=1)
    assert (buffer.code_bits, buffer.item_bits, buffer.block_items, buffer.block_bytes) == (38, 38 + 16, 4, 19)
    assert buffer._payload.numel() == 38  # 8 items * 38 bits = 304 bits = 38 bytes, not 8 * 5 bytes
    buffer.add(torch.randint(2, (5, 38)), torch.zeros(5, dtype=torch.long), 0)
    assert buffer.stored[0].shape == (24,) and buffer.bits_used() == 5 * 54  # 190 bits of codes in 24 bytes
    buffer.add(torch.randint(2, (3, 38)), torch.zeros(3, dtype=torch.long), 0)
    assert buffer.stored[0].shape == (38,) and buffer.bits_used() == 8 * 54 == tensor_bits(buffer)


@pytest.mark.parametrize("c, l", [(38, 2), (33, 32), (5, 1000), (1, 2), (7, 3), (3, 65536), (168, 2)])
@pytest.mark.parametrize("capacity", [1, 2, 3, 5, 8, 13])
def test_storage_is_the_codes_bits_rounded_up_once(c, l, capacity):
    """capacity * c * ceil(log2 l) bits of codes in ceil(that / 8) bytes: at most 7 bits of slack in the whole buffer."""
    buffer = RecollectionBuffer(c, l, capacity=capacity)
    code_bits = capacity * c * bits_per_variable(l)
    assert buffer._payload.dtype == torch.uint8 and buffer._payload.shape == (-(-code_bits // 8),)
    assert 8 * buffer._payload.numel() - code_bits <= 7


@settings(max_examples=60, deadline=None)
@given(l=st.integers(2, 65536), c=st.integers(1, 60), capacity=st.integers(1, 20), more=st.integers(0, 40),
       cut=st.integers(0, 20), seed=st.integers(0, 2**20))
def test_codes_round_trip_through_the_buffer_for_any_c_and_l(l, c, capacity, more, cut, seed):
    """Fill in two batches (the second starting inside a block), replace through the reservoir, then read every slot:
    the unpacked stream, samples of every slot, and a state dict reloaded, all give back the items algorithm R keeps."""
    gen = torch.Generator().manual_seed(seed)
    items = torch.randint(l, (capacity + more, c), generator=gen)
    items[0, 0], items[-1, -1] = l - 1, 0
    buffer = RecollectionBuffer(c, l, capacity=capacity, seed=seed)
    labels = torch.zeros(len(items), dtype=torch.long)
    cut = min(cut, len(items))
    buffer.add(items[:cut], labels[:cut], 0)
    buffer.add(items[cut:], labels[cut:], 0)
    expected = items[algorithm_r(capacity, len(items), seed)]
    assert torch.equal(buffer.stored_codes(), expected)
    assert torch.equal(buffer.stored[0], pack_stream(expected, l))
    every = buffer._gather(torch.arange(capacity))  # the same path sample() takes, on every slot
    assert torch.equal(every.data, expected)
    drawn = buffer.sample(3 * capacity)
    assert torch.equal(drawn.data, expected[drawn.slots])
    restored = RecollectionBuffer(c, l, capacity=capacity)
    restored.load_state_dict(buffer.state_dict())
    assert torch.equal(restored._payload, buffer._payload) and torch.equal(restored.stored_codes(), expected)


@pytest.mark.parametrize("classes, tasks, dtypes", [(10, 1, (torch.uint8, torch.uint8)), (256, 257, (torch.uint8, torch.int16)),
                                                    (40000, 20, (torch.int32, torch.uint8))])
def test_labels_and_tasks_take_the_smallest_dtype_and_count_in_the_budget(classes, tasks, dtypes):
    buffer = RecollectionBuffer(10, 3, budget_bits=10_000, num_classes=classes, num_tasks=tasks)
    assert (buffer.stored[1].dtype, buffer.stored[2].dtype) == dtypes
    bits = 20 + 8 * (dtypes[0].itemsize + dtypes[1].itemsize)  # 10 variables of 2 bits = 20 bits, no padding
    assert buffer.item_bits == bits == recollection_bits(10, 3, classes, tasks)
    assert buffer.capacity == capacity_for_budget(10_000, bits, packed_bits=20)
    assert tensor_bits(buffer) == occupied_bits(buffer.capacity, bits, 20) <= 10_000 < occupied_bits(buffer.capacity + 1, bits, 20)


@settings(max_examples=80, deadline=None)
@given(l=st.integers(2, 65536), c=st.integers(1, 300), budget=st.integers(1, 20_000))
def test_a_budgeted_buffer_fits_its_budget_last_byte_included(l, c, budget):
    item = c * bits_per_variable(l) + 16
    try:
        buffer = RecollectionBuffer(c, l, budget_bits=budget)
    except ValueError as error:
        assert "too small for one item" in str(error)
        assert occupied_bits(1, item, item - 16) > budget
        return
    assert buffer.item_bits == item
    assert tensor_bits(buffer) == occupied_bits(buffer.capacity, item, item - 16) <= budget
    assert occupied_bits(buffer.capacity + 1, item, item - 16) > budget  # and no more would


def test_capacity_or_budget_exactly_one_and_big_enough():
    with pytest.raises(ValueError, match="too small for one item of 184 bits"):
        RecollectionBuffer(168, 2, budget_bits=183)
    assert RecollectionBuffer(168, 2, budget_bits=184).capacity == 1
    # 38 code bits + 16 label/task bits = 54 bits, but one item's codes need 5 whole bytes: 56 bits
    with pytest.raises(ValueError, match=r"too small for one item of 54 bits \(56 bits with its last byte filled\)"):
        RecollectionBuffer(38, 2, budget_bits=55)
    assert RecollectionBuffer(38, 2, budget_bits=56).capacity == 1
    assert RecollectionBuffer(38, 2, budget_bits=111).capacity == 1  # 2 items: 108 bits + 4 to fill the 10th byte
    assert RecollectionBuffer(38, 2, budget_bits=112).capacity == 2
    assert RecollectionBuffer(38, 2, budget_bits=54 * 1000).capacity == 1000  # 38,000 code bits: whole bytes
    with pytest.raises(ValueError, match="exactly one of capacity and budget_bits"):
        RecollectionBuffer(168, 2, capacity=3, budget_bits=1e6)
    with pytest.raises(ValueError, match="exactly one of capacity and budget_bits"):
        RecollectionBuffer(168, 2)
    with pytest.raises(ValueError, match="capacity must be an integer >= 1"):
        RecollectionBuffer(168, 2, capacity=0)


# -- bad input leaves the buffer unchanged ----------------------------------------------------------
def good_batch(n=8, c=168):
    return torch.randint(2, (n, c)), torch.randint(10, (n,)), torch.zeros(n, dtype=torch.long)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b: (b[0] + 1, *b[1:]), r"codes must lie in \[0, 2\)"),
        (lambda b: (b[0] - 1, *b[1:]), r"codes must lie in \[0, 2\)"),
        (lambda b: (b[0][:, :-1], *b[1:]), r"shape \[N, (168|38)\]"),
        (lambda b: (b[0].float(), *b[1:]), "integer tensor"),
        (lambda b: (b[0], b[1] + 10, b[2]), r"labels must lie in \[0, 10\)"),
        (lambda b: (b[0], b[1][:-1], b[2]), r"labels must have shape \[8\]"),
        (lambda b: (b[0], b[1].float(), b[2]), "labels must be an integer tensor"),
        (lambda b: (b[0], b[1], b[2] + 1), r"tasks must lie in \[0, 1\)"),
        (lambda b: (b[0], b[1], 5), r"tasks must lie in \[0, 1\)"),
    ],
)
@pytest.mark.parametrize("c", [168, 38])  # one item per block; 4 items per block, the last block cut short
def test_bad_batches_raise_and_change_nothing(change, message, c):
    buffer = RecollectionBuffer(c, 2, capacity=10, seed=5)
    buffer.add(*good_batch(14, c))
    before = snapshot(buffer)
    payload = buffer._payload.clone()
    with pytest.raises(ValueError, match=message):
        buffer.add(*change(good_batch(8, c)))
    assert_same(before, snapshot(buffer))
    assert torch.equal(payload, buffer._payload)


@pytest.mark.parametrize(
    "images, message",
    [(torch.rand(4, 1, 28, 27), r"shape \[N, 1, 28, 28\]"), (torch.rand(4, 1, 28, 28) + 1, r"in \[0, 1\]"),
     (torch.full((4, 1, 28, 28), float("nan")), r"in \[0, 1\]"), (torch.zeros(4, 1, 28, 28, dtype=torch.int32), "uint8 or floating")],
)
def test_bad_images_raise_and_change_nothing(images, message):
    buffer = LosslessBuffer((1, 28, 28), capacity=3)
    buffer.add(torch.rand(5, 1, 28, 28), torch.zeros(5, dtype=torch.long), 0)
    before = snapshot(buffer)
    with pytest.raises(ValueError, match=message):
        buffer.add(images, torch.zeros(4, dtype=torch.long), 0)
    assert_same(before, snapshot(buffer))


def test_mixed_buffer_changes_neither_part_when_one_part_rejects():
    buffer = MixedBuffer(168, 2, (1, 28, 28), budget_bits=200_000, lossy_fraction=0.25)
    codes, labels, tasks = good_batch()
    buffer.add((torch.rand(8, 1, 28, 28), codes), labels, tasks)
    before = snapshot(buffer)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        buffer.add((torch.rand(8, 1, 28, 28) * 2, codes), labels, tasks)  # codes fine, images not
    assert_same(before, snapshot(buffer))


# -- state dicts -------------------------------------------------------------------------------------
@pytest.mark.parametrize("c, capacity", [(168, 20), (38, 20), (38, 23)])
@pytest.mark.parametrize("first", [3, 45])  # saved while filling (inside a block) or after replacing
def test_state_dict_round_trip_is_bit_for_bit_and_continues_identically(c, capacity, first):
    original = RecollectionBuffer(c, 2, capacity=capacity, num_classes=10, num_tasks=2, seed=11)
    original.add(*good_batch(first, c))
    original.sample(3)
    saved = io.BytesIO()
    torch.save(original.state_dict(), saved)
    restored = RecollectionBuffer(c, 2, capacity=capacity, num_classes=10, num_tasks=2, seed=999)
    restored.load_state_dict(torch.load(io.BytesIO(saved.getvalue())))
    assert_same(snapshot(original), snapshot(restored))
    assert torch.equal(original._payload, restored._payload)  # the unfilled tail too
    assert original.state_dict()["rows"].shape == (-(-min(first, capacity) * c // 8),)
    batch = good_batch(30, c)
    original.add(*batch)
    restored.add(*batch)
    assert_same(snapshot(original), snapshot(restored))
    a, b = original.sample(16), restored.sample(16)
    assert all(torch.equal(x, y) for x, y in zip(a[:4], b[:4], strict=True))
    assert torch.equal(original.sample_codes(4), restored.sample_codes(4))


@pytest.mark.parametrize(
    "other, message",
    [
        (lambda: RecollectionBuffer(167, 2, capacity=20), "c: saved 167 vs this buffer 168"),
        (lambda: RecollectionBuffer(168, 4, capacity=20), "l: saved 4 vs this buffer 2"),
        (lambda: RecollectionBuffer(168, 2, capacity=21), "capacity: saved 21 vs this buffer 20"),
        (lambda: RecollectionBuffer(168, 2, capacity=20, num_classes=100), "num_classes: saved 100"),
        (lambda: LosslessBuffer((1, 28, 28), capacity=20), "kind: saved 'lossless' vs this buffer 'recollection'"),
    ],
)
def test_loading_a_state_of_another_shape_raises_and_changes_nothing(other, message):
    buffer = RecollectionBuffer(168, 2, capacity=20)
    buffer.add(*good_batch(25))
    source = other()
    before = snapshot(buffer)
    with pytest.raises(ValueError, match=message):
        buffer.load_state_dict(source.state_dict())
    assert_same(before, snapshot(buffer))


def test_loading_a_lossless_state_of_another_image_shape_raises():
    buffer = LosslessBuffer((1, 28, 28), capacity=4)
    with pytest.raises(ValueError, match=r"image_shape: saved \[3, 28, 28\] vs this buffer \[1, 28, 28\]"):
        buffer.load_state_dict(LosslessBuffer((3, 28, 28), capacity=4).state_dict())


def test_loading_a_corrupt_state_raises_and_changes_nothing():
    buffer = RecollectionBuffer(168, 2, capacity=20)
    buffer.add(*good_batch(5))
    state = buffer.state_dict()
    before = snapshot(buffer)
    for key, value, message in [("rows", state["rows"][:-1], r"'rows' must be a torch.uint8 tensor of shape \[105\] \(the codes of 5 items"),
                                ("labels", state["labels"] + 20, "'labels' holds values outside"),
                                ("insert_rng", torch.zeros(3, dtype=torch.uint8), "'insert_rng' is not a CPU generator state")]:
        with pytest.raises(ValueError, match=message):
            buffer.load_state_dict(state | {key: value})
    assert_same(before, snapshot(buffer))


def test_loading_a_stream_with_bits_past_its_items_or_codes_out_of_range_raises():
    buffer = RecollectionBuffer(3, 5, capacity=10)  # 9 bits per item; l=5 leaves codes 5..7 unused
    buffer.add(torch.randint(5, (3, 3)), torch.zeros(3, dtype=torch.long), 0)  # 27 bits: 5 spare bits in byte 3
    state = buffer.state_dict()
    before = snapshot(buffer)
    spare = state["rows"].clone()
    spare[-1] |= 0b1000_0000
    with pytest.raises(ValueError, match="bits set past its last item"):
        buffer.load_state_dict(state | {"rows": spare})
    seven = pack_stream(torch.tensor([[0, 1, 2], [3, 4, 0], [1, 1, 1]]), 8)  # a 7 where l=5 allows at most 4
    seven[0] |= 0b111
    with pytest.raises(ValueError, match=r"codes outside \[0, 5\)"):
        buffer.load_state_dict(state | {"rows": seven})
    assert_same(before, snapshot(buffer))


@pytest.mark.parametrize("c, l", [(38, 2), (3, 5), (168, 2)])
def test_states_saved_as_one_padded_row_per_item_still_load(c, l):
    """Before the stream layout, "rows" held [n, bytes_per_item(c, l)]: such checkpoints load into the stream."""
    buffer = RecollectionBuffer(c, l, capacity=12, seed=2)
    offer_codes = torch.randint(l, (30, c), generator=torch.Generator().manual_seed(0))
    buffer.add(offer_codes, torch.zeros(30, dtype=torch.long), 0)
    state = buffer.state_dict()
    legacy = state | {"rows": pack_codes(buffer.stored_codes(), l)}
    assert legacy["rows"].shape == (12, bytes_per_item(c, l))
    restored = RecollectionBuffer(c, l, capacity=12)
    restored.load_state_dict(legacy)
    assert_same(snapshot(buffer), snapshot(restored))


def test_reseed_restarts_both_generators_and_keeps_the_contents():
    buffer = RecollectionBuffer(C, L, capacity=5, seed=1)
    offer(buffer, 0, 20)
    kept = stored_ids(buffer)
    buffer.reseed(8)
    fresh = RecollectionBuffer(C, L, capacity=5, seed=8)
    assert buffer.seed == 8 and torch.equal(stored_ids(buffer), kept)
    assert torch.equal(buffer._insert_rng.get_state(), fresh._insert_rng.get_state())
    assert torch.equal(buffer._sample_rng.get_state(), fresh._sample_rng.get_state())
    mixed = MixedBuffer(168, 2, (1, 28, 28), budget_bits=200_000, lossy_fraction=0.25, seed=3)
    mixed.reseed(4)
    other = MixedBuffer(168, 2, (1, 28, 28), budget_bits=200_000, lossy_fraction=0.25, seed=4)
    assert mixed.seed == 4 and (mixed.lossy.seed, mixed.lossless.seed) == (12, 13)
    assert_same(snapshot(mixed), snapshot(other))
    with pytest.raises(ValueError, match="seed must be an integer"):
        buffer.reseed(1.5)


# -- lossless and mixed ------------------------------------------------------------------------------
def test_lossless_buffer_stores_8_bits_per_pixel_and_decodes_to_unit_floats():
    buffer = LosslessBuffer((3, 4, 5), capacity=10, num_classes=2)
    images = torch.rand(6, 3, 4, 5)
    buffer.add(images, torch.ones(6, dtype=torch.long), 0)
    assert buffer.item_bits == 8 * 60 + 16
    rows = buffer.stored[0]
    assert rows.dtype == torch.uint8 and torch.equal(rows, (images * 255).round().to(torch.uint8))
    drawn = buffer.sample(4)
    decoded = buffer.decode(None, drawn.data)
    assert torch.allclose(decoded, images[drawn.slots], atol=0.5 / 255 + 1e-6)
    exact = torch.randint(256, (2, 3, 4, 5), dtype=torch.uint8)
    buffer.add(exact, torch.zeros(2, dtype=torch.long), 0)
    assert torch.equal(buffer.stored[0][6:], exact)


def test_mixed_buffer_splits_the_budget_and_samples_both_parts():
    budget = 1_000_000
    buffer = MixedBuffer(168, 2, (1, 28, 28), budget_bits=budget, lossy_fraction=0.3, seed=2)
    assert buffer.lossy.capacity == int(0.3 * budget // 184) and buffer.lossless.capacity == int(0.7 * budget // (6272 + 16))
    images, codes = torch.rand(5000, 1, 28, 28), torch.randint(2, (5000, 168))
    buffer.add((images, codes), torch.randint(10, (5000,)), 0)
    assert len(buffer) == buffer.capacity and buffer.bits_used() <= budget and buffer.num_seen == 5000
    drawn = buffer.sample(400)
    lossy_codes, lossless_images = drawn.data
    assert len(lossy_codes) + len(lossless_images) == 400 and len(lossy_codes) > 300  # 1630 of 1741 items are lossy
    assert torch.equal(drawn.slots[: len(lossy_codes)] < buffer.lossy.capacity, torch.ones(len(lossy_codes), dtype=torch.bool))
    decoded = buffer.decode(lambda c: torch.zeros(len(c), 1, 28, 28), drawn.data)
    assert decoded.shape == (400, 1, 28, 28)
    restored = MixedBuffer(168, 2, (1, 28, 28), budget_bits=budget, lossy_fraction=0.3, seed=7)
    restored.load_state_dict(buffer.state_dict())
    assert_same(snapshot(buffer), snapshot(restored))
    with pytest.raises(ValueError, match=r"lossy_fraction must be in \(0, 1\)"):
        MixedBuffer(168, 2, (1, 28, 28), budget_bits=budget, lossy_fraction=1.0)
    with pytest.raises(ValueError, match="too small for one item of 6288 bits"):
        MixedBuffer(168, 2, (1, 28, 28), budget_bits=7000, lossy_fraction=0.5)


# -- DDP: a reservoir per rank over its shard ---------------------------------------------------------
def fill_rank(rank: int, world: int, stream: int, capacity: int, seed: int) -> torch.Tensor:
    """What one DDP rank does: feed its DistributedSampler shard, in batches, to its own buffer."""
    shard = torch.tensor(list(DistributedSampler(range(stream), num_replicas=world, rank=rank, shuffle=False)))
    buffer = RecollectionBuffer(C, L, capacity=capacity, seed=seed + rank)
    for ids in shard.split(32):
        buffer.add(id_codes(ids), ids % 10, 0)
    assert buffer.num_seen == len(shard)
    return stored_ids(buffer)


def check_shards(kept: list[torch.Tensor], world: int, stream: int, capacity: int) -> None:
    for rank, ids in enumerate(kept):
        assert len(ids) == capacity and torch.all(ids % world == rank)  # only its own shard
    union = torch.cat(kept)
    assert len(union.unique()) == world * capacity and union.max() < stream  # disjoint, right size


def test_each_rank_keeps_a_reservoir_over_its_own_shard():
    kept = [fill_rank(rank, 2, 1000, 64, seed=0) for rank in range(2)]
    check_shards(kept, 2, 1000, 64)


def _ddp_worker(rank: int, world: int, init_file: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    gathered = [None] * world
    torch.distributed.all_gather_object(gathered, fill_rank(rank, world, 1000, 64, seed=0))
    if rank == 0:
        torch.save(gathered, out)
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_hold_disjoint_shards(tmp_path):
    out = tmp_path / "kept.pt"
    torch.multiprocessing.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2)
    check_shards(torch.load(out), 2, 1000, 64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("c, capacity", [(168, 50), (38, 50), (38, 49)])  # k=1; k=4 with whole blocks; last block cut
def test_buffer_on_cuda_matches_cpu(c, capacity):
    on_gpu, on_cpu = RecollectionBuffer(c, 2, capacity=capacity, device="cuda"), RecollectionBuffer(c, 2, capacity=capacity)
    for _ in range(4):
        codes, labels, tasks = good_batch(37, c)
        on_gpu.add(codes.cuda(), labels.cuda(), tasks.cuda())
        on_cpu.add(codes, labels, tasks)
    assert on_gpu.stored[0].is_cuda
    assert_same({k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in snapshot(on_gpu).items()}, snapshot(on_cpu))
    assert torch.equal(on_gpu.sample(20).data.cpu(), on_cpu.sample(20).data)


@pytest.mark.parametrize(("capacity", "seen", "n"), [(5, 0, 10), (5, 3, 10), (200, 190, 10), (200, 5000, 10), (1, 0, 64),
                                                    (7, 6, 1), (300, 100000, 64), (10, 10, 33)])
def test_small_batch_reservoir_writes_equal_the_tensor_path(capacity, seen, n, monkeypatch):
    """Incoming batches take a plain-Python path through algorithm R; it must write exactly what the tensor path writes."""
    import lossy_memory.memory.buffers as buffers

    for seed in range(10):
        buffer = LosslessBuffer((1, 2, 2), capacity=capacity, seed=seed)
        buffer._num_seen = seen
        state = buffer._insert_rng.get_state()
        fast = buffer._reservoir_writes(n)
        buffer._insert_rng.set_state(state)
        monkeypatch.setattr(buffers, "SMALL_BATCH", 0)
        tensor_path = buffer._reservoir_writes(n)
        monkeypatch.undo()
        assert all(torch.equal(a, b) for a, b in zip(fast, tensor_path, strict=True)), (seed, fast, tensor_path)


def test_per_slot_attributes_are_paid_for_kept_with_their_items_and_saved():
    attributes = {"logits": ((3,), torch.float16)}
    plain, buffer = (LosslessBuffer((1, 2, 2), budget_bits=2000, num_classes=4, seed=0, attributes=a) for a in (None, attributes))
    assert buffer.item_bits == plain.item_bits + 3 * 16 and buffer.capacity < plain.capacity
    expected = torch.zeros(buffer.capacity, 3, dtype=torch.float16)  # what each slot's logits must be, from the writes
    for step in range(4):
        labels = torch.arange(6) % 4
        logits = labels[:, None].float().expand(6, 3) + 10 * step
        writes = buffer.add(torch.rand(6, 1, 2, 2), labels, 0, {"logits": logits})
        expected[writes.slots] = logits[writes.sources].half()
    assert buffer.num_seen == 24 > buffer.capacity  # the reservoir replaced some items
    drawn = buffer.sample(50)
    assert drawn.attributes["logits"].dtype == torch.float16
    assert torch.equal(drawn.attributes["logits"], expected[drawn.slots])
    assert torch.equal(drawn.attributes["logits"][:, 0].long() % 10, drawn.labels)  # drawn with their own items
    restored = LosslessBuffer((1, 2, 2), budget_bits=2000, num_classes=4, seed=0, attributes=attributes)
    restored.load_state_dict(buffer.state_dict())
    assert torch.equal(restored.sample(20).attributes["logits"], buffer.sample(20).attributes["logits"])
    with pytest.raises(ValueError, match="per-slot attributes"):
        buffer.add(torch.rand(2, 1, 2, 2), torch.zeros(2, dtype=torch.long), 0)
    with pytest.raises(ValueError, match=r"attribute 'logits' must be a tensor of shape \[2, 3\]"):
        buffer.add(torch.rand(2, 1, 2, 2), torch.zeros(2, dtype=torch.long), 0, {"logits": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match="another shape"):
        plain.load_state_dict(buffer.state_dict())


@pytest.mark.parametrize("kind", ["codes", "images"])
def test_add_encoded_writes_what_add_writes_and_encodes_only_the_rows_written(kind):
    g = torch.Generator().manual_seed(5)
    make = (lambda: RecollectionBuffer(6, 2, capacity=20, num_classes=10, seed=4)) if kind == "codes" else (
        lambda: LosslessBuffer((1, 2, 2), capacity=20, num_classes=10, seed=4))
    encode_rows = (lambda x: (x.flatten(1).repeat(1, 2)[:, :6] > 0.5).long()) if kind == "codes" else (lambda x: x)
    eager, lazy, encoded = make(), make(), []

    def counting(x):
        encoded.append(len(x))
        return encode_rows(x)

    for _ in range(30):  # 300 items through 20 slots: late batches mostly write nothing
        x, y = torch.rand(10, 1, 2, 2, generator=g), torch.randint(10, (10,), generator=g)
        written, lazily = eager.add(encode_rows(x), y, 0), lazy.add_encoded(x, counting, y, 0)
        assert torch.equal(written.sources, lazily.sources) and torch.equal(written.slots, lazily.slots)
    assert torch.equal(eager.stored[0], lazy.stored[0]) and torch.equal(eager.stored[1], lazy.stored[1])
    assert eager._insert_rng.get_state().equal(lazy._insert_rng.get_state())
    assert sum(encoded) < 300 / 2 and encoded[:2] == [10, 10]  # every row while filling, then only the rows written


def test_a_failing_encoder_leaves_the_buffer_and_its_draws_unchanged():
    buffer = LosslessBuffer((1, 2, 2), capacity=5, num_classes=10, seed=4)
    buffer.add(torch.zeros(5, 1, 2, 2, dtype=torch.uint8), torch.zeros(5, dtype=torch.long), 0)
    state = buffer.state_dict()
    with pytest.raises(ValueError, match="one item per image"):
        buffer.add_encoded(torch.rand(40, 1, 2, 2), lambda x: x[:1], torch.zeros(40, dtype=torch.long), 0)
    after = buffer.state_dict()
    assert after["num_seen"] == state["num_seen"] and after["insert_rng"].equal(state["insert_rng"])


@pytest.mark.parametrize("make", [lambda: RecollectionBuffer(38, 2, budget_bits=100_000), lambda: LosslessBuffer((1, 2, 2), capacity=9),
                                  lambda: MixedBuffer(38, 2, (1, 28, 28), budget_bits=100_000, lossy_fraction=0.5)])
def test_a_buffer_shared_out_between_processes_keeps_its_share_of_the_budget(make):
    whole, half = make(), make()
    half.share(2)
    assert half.capacity <= whole.capacity // 2 + 1 and 2 * half.capacity <= whole.capacity + 1
    if getattr(whole, "budget_bits", None) is not None:
        assert half.budget_bits == whole.budget_bits / 2
    codes = torch.zeros(1, 38, dtype=torch.long)
    items = {LosslessBuffer: torch.zeros(1, 1, 2, 2, dtype=torch.uint8), MixedBuffer: (torch.zeros(1, 1, 28, 28), codes)}
    half.add(items.get(type(half), codes), torch.zeros(1, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="before anything is stored"):
        half.share(2)
