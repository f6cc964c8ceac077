"""Bit packing of categorical codes: exact round trips, the documented layouts (rows and one stream), exact sizes,
clear errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lossy_memory.memory.packing import (
    bits_per_variable,
    bytes_per_item,
    check_codes,
    items_per_block,
    pack_codes,
    pack_stream,
    stream_bytes,
    unpack_codes,
    unpack_stream,
)


def reference_pack(codes: torch.Tensor, l: int) -> torch.Tensor:
    """The layout spelled out one bit at a time: variable j at bits [j*b, (j+1)*b), LSB first, little-endian bytes."""
    b = bits_per_variable(l)
    n, c = codes.shape
    nbytes = -(-c * b // 8)
    out = torch.zeros(n, nbytes, dtype=torch.uint8)
    for i in range(n):
        stream = sum(int(v) << (j * b) for j, v in enumerate(codes[i].tolist()))
        out[i] = torch.tensor(list(stream.to_bytes(nbytes, "little")), dtype=torch.uint8)
    return out


def reference_stream(codes: torch.Tensor, l: int) -> bytes:
    """All items as one bitstream: item i, variable j at bits [(i*c + j)*b, (i*c + j + 1)*b), no padding per item."""
    b = bits_per_variable(l)
    n, c = codes.shape
    stream = sum(int(v) << (p * b) for p, v in enumerate(codes.flatten().tolist()))
    return stream.to_bytes(-(-n * c * b // 8), "little")


def random_codes(n: int, c: int, l: int, seed: int) -> torch.Tensor:
    codes = torch.randint(l, (n, c), generator=torch.Generator().manual_seed(seed))
    if n:  # make sure the extremes are exercised
        codes[0, 0] = l - 1
        codes[-1, -1] = 0
    return codes


@settings(max_examples=300, deadline=None)
@given(l=st.integers(2, 65536), c=st.integers(1, 200), n=st.integers(0, 12), seed=st.integers(0, 2**31))
def test_round_trip_is_exact_for_any_l_and_c(l, c, n, seed):
    codes = random_codes(n, c, l, seed)
    packed = pack_codes(codes, l)
    assert packed.dtype == torch.uint8 and packed.shape == (n, bytes_per_item(c, l))
    restored = unpack_codes(packed, c, l)
    assert restored.dtype == torch.int64
    assert torch.equal(restored, codes)


@settings(max_examples=60, deadline=None)
@given(l=st.integers(2, 65536), c=st.integers(1, 40), seed=st.integers(0, 2**31))
def test_layout_matches_the_documented_bitstream(l, c, seed):
    codes = random_codes(3, c, l, seed)
    assert torch.equal(pack_codes(codes, l), reference_pack(codes, l))


@settings(max_examples=200, deadline=None)
@given(l=st.integers(2, 65536), c=st.integers(1, 80), n=st.integers(0, 20), seed=st.integers(0, 2**31))
def test_stream_round_trip_and_layout_for_any_l_and_c(l, c, n, seed):
    codes = random_codes(n, c, l, seed)
    stream = pack_stream(codes, l)
    assert stream.dtype == torch.uint8 and stream.shape == (stream_bytes(n, c, l),) == (-(-n * c * bits_per_variable(l) // 8),)
    assert bytes(stream.tolist()) == reference_stream(codes, l)
    assert torch.equal(unpack_stream(stream, n, c, l), codes)
    if n:  # a longer stream: its first items
        assert torch.equal(unpack_stream(pack_stream(torch.cat([codes, codes]), l), n, c, l), codes)


@pytest.mark.parametrize("c, l, k", [(168, 2, 1), (38, 2, 4), (1, 2, 8), (3, 8, 8), (2, 16, 1), (5, 1000, 4), (1, 65536, 1), (1, 4096, 2)])
def test_blocks_are_the_fewest_items_filling_whole_bytes(c, l, k):
    assert items_per_block(c, l) == k
    assert k * c * bits_per_variable(l) % 8 == 0 and all(j * c * bits_per_variable(l) % 8 for j in range(1, k))


def test_a_stream_of_8_items_of_38_binary_variables_is_38_bytes():
    codes = random_codes(8, 38, 2, 0)
    assert stream_bytes(8, 38, 2) == 38 and pack_stream(codes, 2).shape == (38,)
    assert pack_codes(codes, 2).numel() == 40  # one padded row per item: 2 bits of padding each
    assert stream_bytes(5, 38, 2) == 24  # 190 bits: one partial byte for the whole stream
    assert stream_bytes(1_000_000, 168, 2) == 21_000_000


def test_stream_by_hand():
    # l=8 (3 bits), two items of c=2: 5, 3 | 7, 1 -> stream bits (LSB first) 1,0,1, 1,1,0 | 1,1,1, 1,0,0
    # -> bytes 0b11011101, 0b0011 (the second item starts at bit 6, inside the first byte)
    assert pack_stream(torch.tensor([[5, 3], [7, 1]]), 8).tolist() == [0b11011101, 0b11]
    # l=2, c=3: the third item starts at bit 6 and straddles into the second byte
    assert pack_stream(torch.tensor([[1, 0, 1], [1, 1, 0], [0, 1, 1]]), 2).tolist() == [0b10011101, 0b1]


def test_unpack_stream_rejects_bad_streams():
    with pytest.raises(ValueError, match=r"stream of 8 items of c=38, l=2 must have shape \[>= 38\].*\(37,\)"):
        unpack_stream(torch.zeros(37, dtype=torch.uint8), 8, 38, 2)
    with pytest.raises(ValueError, match="uint8 tensor.*int64"):
        unpack_stream(torch.zeros(38, dtype=torch.int64), 8, 38, 2)
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\)"):
        pack_stream(torch.full((2, 3), 2), 2)


def test_layout_by_hand():
    # l=8 (3 bits): 5=101b, 3=011b, 7=111b -> stream bits (LSB first) 1,0,1, 1,1,0, 1,1,1 -> bytes 0b11011101, 0b1
    assert pack_codes(torch.tensor([[5, 3, 7]]), 8).tolist() == [[0b11011101, 0b1]]
    # l=2: the ninth variable straddles into the second byte
    assert pack_codes(torch.tensor([[1, 0, 1, 1, 0, 0, 0, 0, 1]]), 2).tolist() == [[0b1101, 0b1]]


@pytest.mark.parametrize("c, l, nbytes", [(168, 2, 21), (168, 3, 42), (38, 2, 5), (1, 2, 1), (3, 65536, 6), (5, 1000, 7), (8, 2, 1)])
def test_items_cost_c_times_ceil_log2_l_bits_padded_to_a_byte(c, l, nbytes):
    assert bytes_per_item(c, l) == nbytes
    assert pack_codes(torch.zeros(4, c, dtype=torch.long), l).shape == (4, nbytes)


def test_padding_bits_are_zero():
    packed = pack_codes(torch.full((2, 3), 7), 8)  # 9 bits used of 16
    assert packed[:, 1].tolist() == [1, 1]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.int64])
def test_any_integer_dtype_packs_the_same(dtype):
    codes = random_codes(50, 21, 100, 0)
    assert torch.equal(pack_codes(codes.to(dtype), 100), pack_codes(codes, 100))


@pytest.mark.parametrize(
    "codes, l, message",
    [
        (torch.tensor([[0, 2]]), 2, r"must lie in \[0, 2\).*\[0, 2\]"),
        (torch.tensor([[0, -1]]), 2, r"must lie in \[0, 2\).*\[-1, 0\]"),
        (torch.tensor([0, 1]), 2, r"shape \[N, c\]"),
        (torch.zeros(2, 3, 4, dtype=torch.long), 16, r"shape \[N, c\].*\(2, 3, 4\)"),
        (torch.zeros(2, 0, dtype=torch.long), 16, r"shape \[N, c\]"),
        (torch.zeros(2, 3), 16, "integer tensor.*float32"),
        (torch.zeros(2, 3, dtype=torch.bool), 16, "integer tensor.*bool"),
        ([[0, 1]], 2, "torch.Tensor.*list"),
        (torch.zeros(2, 3, dtype=torch.long), 1, r"l \(values per variable\).*\[2, 65536\].*1"),
        (torch.zeros(2, 3, dtype=torch.long), 65537, r"\[2, 65536\].*65537"),
    ],
)
def test_pack_rejects_bad_codes_with_a_clear_message(codes, l, message):
    with pytest.raises(ValueError, match=message):
        pack_codes(codes, l)


def test_check_codes_names_the_expected_width():
    with pytest.raises(ValueError, match=r"\[N, 168\].*\(4, 167\)"):
        check_codes(torch.zeros(4, 167, dtype=torch.long), 168, 2)


@pytest.mark.parametrize(
    "packed, message",
    [(torch.zeros(3, 20, dtype=torch.uint8), r"\[N, 21\].*\(3, 20\)"), (torch.zeros(3, 21, dtype=torch.int64), "uint8.*int64")],
)
def test_unpack_rejects_bad_packed_tensors(packed, message):
    with pytest.raises(ValueError, match=message):
        unpack_codes(packed, 168, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("l", [2, 5, 16, 256, 1000, 65536])
def test_cuda_packs_like_cpu(l):
    codes = random_codes(300, 37, l, 1)
    packed = pack_codes(codes.cuda(), l)
    assert packed.is_cuda and torch.equal(packed.cpu(), pack_codes(codes, l))
    assert torch.equal(unpack_codes(packed, 37, l).cpu(), codes)
    stream = pack_stream(codes.cuda(), l)
    assert stream.is_cuda and torch.equal(stream.cpu(), pack_stream(codes, l))
    assert torch.equal(unpack_stream(stream, 300, 37, l).cpu(), codes)
