"""Reservoir buffers: algorithm R exactly (batched = one by one), uniformity, exact storage, state round trips,
bad input leaving everything unchanged, per-rank (DDP) shards."""

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
from lossy_memory.memory.budget import recollection_bits
from lossy_memory.memory.packing import unpack_codes

C, L = 2, 65536  # two 16-bit variables: an item's code can spell its stream position


def id_codes(ids: torch.Tensor) -> torch.Tensor:
    return torch.stack([ids % L, ids // L], dim=1)


def stored_ids(buffer: RecollectionBuffer) -> torch.Tensor:
    rows, _, _ = buffer.stored
    codes = unpack_codes(rows, C, L)
    return codes[:, 0] + codes[:, 1] * L


def offer(buffer: RecollectionBuffer, start: int, n: int) -> None:
    ids = torch.arange(start, start + n)
    buffer.add(id_codes(ids), ids % buffer.num_classes, 0)


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
def test_first_capacity_items_are_kept_verbatim_in_order():
    buffer = RecollectionBuffer(C, L, capacity=100)
    offer(buffer, 0, 37)
    offer(buffer, 37, 63)
    assert len(buffer) == 100 and buffer.num_seen == 100
    assert stored_ids(buffer).tolist() == list(range(100))
    labels = buffer.stored[1]
    assert labels.dtype == torch.uint8 and labels.tolist() == [i % 10 for i in range(100)]


@settings(max_examples=40, deadline=None)
@given(capacity=st.integers(1, 30), batches=st.lists(st.integers(0, 60), min_size=1, max_size=8), seed=st.integers(0, 2**20))
def test_batched_insertion_is_algorithm_r_item_by_item(capacity, batches, seed):
    buffer = RecollectionBuffer(C, L, capacity=capacity, seed=seed)
    start = 0
    for size in batches:
        offer(buffer, start, size)
        start += size
    assert stored_ids(buffer).tolist() == algorithm_r(capacity, start, seed)
    one_by_one = RecollectionBuffer(C, L, capacity=capacity, seed=seed)
    for i in range(start):
        offer(one_by_one, i, 1)
    assert_same(snapshot(buffer), snapshot(one_by_one))


def test_duplicate_slots_within_a_batch_keep_the_last_writer():
    buffer = RecollectionBuffer(C, L, capacity=1, seed=3)
    offer(buffer, 0, 500)  # hundreds of items draw slot 0 in this one batch
    assert stored_ids(buffer).tolist() == algorithm_r(1, 500, 3)


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
def test_sample_draws_only_stored_items_with_their_labels():
    buffer = RecollectionBuffer(C, L, capacity=50, num_classes=7, num_tasks=3)
    ids = torch.arange(20)
    buffer.add(id_codes(ids), ids % 7, ids % 3)
    drawn = buffer.sample(200)
    assert drawn.data.dtype == torch.int64 and drawn.data.shape == (200, C)
    item = drawn.data[:, 0] + drawn.data[:, 1] * L
    assert torch.equal(item, drawn.slots) and set(item.tolist()) <= set(range(20))
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
def test_a_million_items_of_168_binary_variables_take_21_million_bytes_of_codes():
    buffer = RecollectionBuffer(168, 2, capacity=1_000_000, num_classes=10, num_tasks=1)
    codes, labels = torch.randint(2, (100_000, 168), dtype=torch.uint8), torch.zeros(100_000, dtype=torch.long)
    for _ in range(10):
        buffer.add(codes, labels, 0)
    rows, labels, tasks = buffer.stored
    assert len(buffer) == 1_000_000
    assert rows.numel() * rows.element_size() == 21_000_000
    assert labels.numel() * labels.element_size() == 1_000_000 and tasks.numel() * tasks.element_size() == 1_000_000
    assert buffer.bits_used() == 8 * (21_000_000 + 2_000_000) == 1_000_000 * buffer.item_bits


@pytest.mark.parametrize("classes, tasks, dtypes", [(10, 1, (torch.uint8, torch.uint8)), (256, 257, (torch.uint8, torch.int16)),
                                                    (40000, 20, (torch.int32, torch.uint8))])
def test_labels_and_tasks_take_the_smallest_dtype_and_count_in_the_budget(classes, tasks, dtypes):
    buffer = RecollectionBuffer(10, 3, budget_bits=10_000, num_classes=classes, num_tasks=tasks)
    assert (buffer.stored[1].dtype, buffer.stored[2].dtype) == dtypes
    bits = 8 * 3 + 8 * (dtypes[0].itemsize + dtypes[1].itemsize)  # 10 variables of 2 bits = 20 bits -> 3 bytes
    assert buffer.item_bits == bits == recollection_bits(10, 3, classes, tasks)
    assert buffer.capacity == 10_000 // bits


def test_capacity_or_budget_exactly_one_and_big_enough():
    with pytest.raises(ValueError, match="too small for one item of 184 bits"):
        RecollectionBuffer(168, 2, budget_bits=183)
    assert RecollectionBuffer(168, 2, budget_bits=184).capacity == 1
    with pytest.raises(ValueError, match="exactly one of capacity and budget_bits"):
        RecollectionBuffer(168, 2, capacity=3, budget_bits=1e6)
    with pytest.raises(ValueError, match="exactly one of capacity and budget_bits"):
        RecollectionBuffer(168, 2)
    with pytest.raises(ValueError, match="capacity must be an integer >= 1"):
        RecollectionBuffer(168, 2, capacity=0)


# -- bad input leaves the buffer unchanged ----------------------------------------------------------
def good_batch(n=8):
    return torch.randint(2, (n, 168)), torch.randint(10, (n,)), torch.zeros(n, dtype=torch.long)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b: (b[0] + 1, *b[1:]), r"codes must lie in \[0, 2\)"),
        (lambda b: (b[0] - 1, *b[1:]), r"codes must lie in \[0, 2\)"),
        (lambda b: (b[0][:, :167], *b[1:]), r"shape \[N, 168\]"),
        (lambda b: (b[0].float(), *b[1:]), "integer tensor"),
        (lambda b: (b[0], b[1] + 10, b[2]), r"labels must lie in \[0, 10\)"),
        (lambda b: (b[0], b[1][:-1], b[2]), r"labels must have shape \[8\]"),
        (lambda b: (b[0], b[1].float(), b[2]), "labels must be an integer tensor"),
        (lambda b: (b[0], b[1], b[2] + 1), r"tasks must lie in \[0, 1\)"),
        (lambda b: (b[0], b[1], 5), r"tasks must lie in \[0, 1\)"),
    ],
)
def test_bad_batches_raise_and_change_nothing(change, message):
    buffer = RecollectionBuffer(168, 2, capacity=10, seed=5)
    buffer.add(*good_batch(14))
    before = snapshot(buffer)
    with pytest.raises(ValueError, match=message):
        buffer.add(*change(good_batch()))
    assert_same(before, snapshot(buffer))


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
def test_state_dict_round_trip_is_bit_for_bit_and_continues_identically():
    original = RecollectionBuffer(168, 2, capacity=20, num_classes=10, num_tasks=2, seed=11)
    for _ in range(5):
        original.add(*good_batch(9))
    original.sample(3)
    saved = io.BytesIO()
    torch.save(original.state_dict(), saved)
    restored = RecollectionBuffer(168, 2, capacity=20, num_classes=10, num_tasks=2, seed=999)
    restored.load_state_dict(torch.load(io.BytesIO(saved.getvalue())))
    assert_same(snapshot(original), snapshot(restored))
    assert torch.equal(original._rows, restored._rows)  # the unfilled tail too
    batch = good_batch(30)
    original.add(*batch)
    restored.add(*batch)
    assert_same(snapshot(original), snapshot(restored))
    a, b = original.sample(16), restored.sample(16)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
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
    for key, value, message in [("rows", state["rows"][:-1], "'rows' must be a torch.uint8 tensor of shape \\[5, 21\\]"),
                                ("labels", state["labels"] + 20, "'labels' holds values outside"),
                                ("insert_rng", torch.zeros(3, dtype=torch.uint8), "'insert_rng' is not a CPU generator state")]:
        with pytest.raises(ValueError, match=message):
            buffer.load_state_dict(state | {key: value})
    assert_same(before, snapshot(buffer))


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
def test_buffer_on_cuda_matches_cpu():
    on_gpu, on_cpu = RecollectionBuffer(168, 2, capacity=50, device="cuda"), RecollectionBuffer(168, 2, capacity=50)
    for _ in range(4):
        codes, labels, tasks = good_batch(40)
        on_gpu.add(codes.cuda(), labels.cuda(), tasks.cuda())
        on_cpu.add(codes, labels, tasks)
    assert on_gpu.stored[0].is_cuda
    assert_same({k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in snapshot(on_gpu).items()}, snapshot(on_cpu))
    assert torch.equal(on_gpu.sample(20).data.cpu(), on_cpu.sample(20).data)
