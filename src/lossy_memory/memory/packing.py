"""Bit-exact storage of categorical codes: c variables of l values cost c * ceil(log2 l) bits per item.

The bitstream: an item's variables form one little-endian bitstream, variable j occupying bits
[j*b, (j+1)*b) with its least significant bit first (b = ceil(log2 l)); bit p of a stream is bit p % 8 of
byte p // 8. Variables straddle byte boundaries freely.

Two ways of laying items out:

- ``pack_codes`` / ``unpack_codes``: one row of ``bytes_per_item(c, l)`` bytes per item, each item's stream
  padded with zero bits up to a whole byte (none when c*b is a multiple of 8, e.g. 168 binary variables =
  21 bytes). Handy for handing items around one by one.
- ``pack_stream`` / ``unpack_stream`` (what ``RecollectionBuffer`` stores): the items' streams concatenated
  into one, item i at bits [i*B, (i+1)*B) with B = c*b, so n items take exactly ``stream_bytes(n, c, l)`` =
  ceil(n*B / 8) bytes: at most 7 bits of slack for the whole stream, none per item. The stream is a sequence
  of *blocks* of k = ``items_per_block(c, l)`` = 8 / gcd(B, 8) items (k <= 8): k*B bits, the fewest items
  that end exactly on a byte boundary. Block j is bytes [j*K, (j+1)*K) with K = k*B/8 (only the last block of
  a stream may be cut short), and packing a block is packing one "item" of k*c variables, so blocks are
  addressable rows of K bytes: a buffer rewrites an item by rewriting its block, and reads one by reading its.

Everything is torch, device-agnostic, and vectorised over items and variables: the only Python loops run
over the <= 8 variables of a byte-aligned group (see ``_group_layout``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F

MAX_VALUES = 2**16
_BYTE_WEIGHTS = 1 << torch.arange(8, dtype=torch.uint8)
# Multiplying 8 little-endian 0/1 bytes (read as one int64) by this constant moves byte i's bit to bit 56+i
# without collisions or carries (every (i, j) term lands on its own bit), so `>> 56` is the packed byte.
_GATHER_BITS = 0x0102040810204080
_WORD_BYTES = 7
_WORD_BITS = 8 * _WORD_BYTES

if sys.byteorder != "little":  # the int64 views below read bytes in little-endian order
    raise ImportError("lossy_memory.memory.packing assumes a little-endian host")


def bits_per_variable(l: int) -> int:
    """ceil(log2 l): bits that hold one variable of l values."""
    _check_l(l)
    return (l - 1).bit_length()


def bytes_per_item(c: int, l: int) -> int:
    """Bytes of one item packed on its own (a row of ``pack_codes``): c * ceil(log2 l) bits rounded up to a byte."""
    _check_c(c)
    return -(-c * bits_per_variable(l) // 8)


def items_per_block(c: int, l: int) -> int:
    """k = 8 / gcd(c * ceil(log2 l), 8): the fewest items whose bits fill whole bytes (1, 2, 4 or 8)."""
    _check_c(c)
    return _block_items(c * bits_per_variable(l))


def stream_bytes(n: int, c: int, l: int) -> int:
    """Bytes of n items packed as one stream: ceil(n * c * ceil(log2 l) / 8)."""
    _check_c(c)
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"number of items must be an integer >= 0, got {n!r}")
    return -(-int(n) * c * bits_per_variable(l) // 8)


def check_codes(codes: torch.Tensor, c: int | None, l: int) -> None:
    """Raise ValueError unless ``codes`` is an integer tensor [N, c] (any c >= 1 when None) with values in [0, l)."""
    _check_l(l)
    if c is not None:
        _check_c(c)
    if not isinstance(codes, torch.Tensor):
        raise ValueError(f"codes must be a torch.Tensor, got {type(codes).__name__}")
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise ValueError(f"codes must be an integer tensor, got dtype {codes.dtype}")
    if codes.dim() != 2 or codes.shape[1] < 1 or codes.shape[1] != (c or codes.shape[1]):
        want = f"[N, {c}] (c={c} variables per item)" if c else "[N, c] with c >= 1"
        raise ValueError(f"codes must have shape {want}, got {tuple(codes.shape)}")
    require_in_range(codes, l, lambda low, high: f"codes must lie in [0, {l}) for l={l}, got values in [{low}, {high}]")


def require_in_range(values: torch.Tensor, limit: int, message: Callable[[object, object], str]) -> None:
    """ValueError(``message(low, high)``) unless every value lies in [0, limit). On an accelerator the check is queued on
    the device instead (``torch._assert_async``: a failure stops the run with that message as a device-side
    assertion), so that storing a batch never waits for the device."""
    if not values.numel():
        return
    if values.device.type == "cpu":
        if values.numel() <= 64:  # an incoming batch's labels: read in Python, no kernel (the step's hot path)
            flat = values.reshape(-1).tolist()
            low, high = min(flat), max(flat)
        else:
            low, high = (int(v) for v in torch.aminmax(values))
        if low < 0 or high >= limit:
            raise ValueError(message(low, high))
    else:
        torch._assert_async(((values >= 0) & (values < limit)).all(), message("?", "?"))


def pack_codes(codes: torch.Tensor, l: int) -> torch.Tensor:
    """Integer codes [N, c] with values in [0, l) -> packed uint8 [N, bytes_per_item(c, l)] on the same device."""
    check_codes(codes, None, l)
    return _pack(codes, bits_per_variable(l))


def unpack_codes(packed: torch.Tensor, c: int, l: int) -> torch.Tensor:
    """Packed uint8 [N, bytes_per_item(c, l)] -> LongTensor codes [N, c] on the same device (inverse of pack_codes)."""
    nbytes = bytes_per_item(c, l)
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8:
        raise ValueError(f"packed codes must be a uint8 tensor, got {getattr(packed, 'dtype', type(packed).__name__)}")
    if packed.dim() != 2 or packed.shape[1] != nbytes:
        raise ValueError(f"packed codes for c={c}, l={l} must have shape [N, {nbytes}], got {tuple(packed.shape)}")
    return _unpack(packed, c, bits_per_variable(l))


def pack_stream(codes: torch.Tensor, l: int) -> torch.Tensor:
    """Integer codes [n, c] with values in [0, l) -> their stream, uint8 [stream_bytes(n, c, l)] on the same device."""
    check_codes(codes, None, l)
    return _pack_stream(codes, bits_per_variable(l))


def unpack_stream(stream: torch.Tensor, n: int, c: int, l: int) -> torch.Tensor:
    """The first n items of a stream (uint8 [stream_bytes(n, c, l)] or longer) -> LongTensor codes [n, c]."""
    nbytes = stream_bytes(n, c, l)
    if not isinstance(stream, torch.Tensor) or stream.dtype != torch.uint8:
        raise ValueError(f"a packed stream must be a uint8 tensor, got {getattr(stream, 'dtype', type(stream).__name__)}")
    if stream.dim() != 1 or stream.shape[0] < nbytes:
        raise ValueError(f"a stream of {n} items of c={c}, l={l} must have shape [>= {nbytes}], got {tuple(stream.shape)}")
    return _unpack_stream(stream[:nbytes], n, c, bits_per_variable(l))


# -- unchecked kernels (callers have validated codes and shapes) --------------------------------------
def _block_items(item_bits: int) -> int:
    return 8 // math.gcd(item_bits, 8)


def _pack_stream(codes: torch.Tensor, b: int) -> torch.Tensor:
    """Codes [n, c] -> uint8 [ceil(n*c*b/8)]: zero items pad the last block, which is then cut to the last byte."""
    n, c = codes.shape
    k = _block_items(c * b)
    blocks = -(-n // k)
    if blocks * k != n:
        codes = torch.cat([codes, codes.new_zeros(blocks * k - n, c)])
    return _pack(codes.reshape(blocks, k * c), b).reshape(-1)[: -(-n * c * b // 8)]


def _unpack_stream(stream: torch.Tensor, n: int, c: int, b: int) -> torch.Tensor:
    """uint8 [ceil(n*c*b/8)] -> codes [n, c] (inverse of _pack_stream)."""
    k = _block_items(c * b)
    blocks, block_bytes = -(-n // k), k * c * b // 8
    stream = F.pad(stream, (0, blocks * block_bytes - stream.shape[0]))
    return _unpack(stream.view(blocks, block_bytes), k * c, b).reshape(blocks * k, c)[:n]


def _pack(codes: torch.Tensor, b: int) -> torch.Tensor:
    """Codes [N, c] (values below 2**b) -> uint8 [N, ceil(c*b/8)]."""
    n, c = codes.shape
    nbytes = -(-c * b // 8)
    if b in (8, 16):  # byte-aligned: the little-endian bytes of each code already are the layout
        dtype = torch.uint8 if b == 8 else torch.int16  # int16 wraps 32768..65535 onto the same two bytes
        return codes.to(dtype).contiguous().view(torch.uint8).view(n, nbytes)
    if b == 1:  # the paper's default (l=2): the codes are the bits; gather 8 of them per byte with one multiply
        bits = torch.zeros(n, -(-nbytes // 8) * 64, dtype=torch.uint8, device=codes.device)
        bits[:, :c] = codes
        return ((bits.view(torch.int64) * _GATHER_BITS >> 56) & 0xFF).to(torch.uint8)[:, :nbytes]
    g, group_bytes, groups, words = _group_layout(c, b)
    x = F.pad(codes.long(), (0, groups * g - c)).view(n, groups, g).permute(2, 0, 1).contiguous()  # [g, n, groups]
    acc = torch.zeros(n, groups, words, dtype=torch.int64, device=codes.device)
    for m in range(g):  # variable m of every group at once
        word, offset = divmod(m * b, _WORD_BITS)
        room = _WORD_BITS - offset
        if b <= room:
            acc[:, :, word] |= x[m] << offset
        else:  # straddles two words: low `room` bits here, the rest at the bottom of the next word
            acc[:, :, word] |= (x[m] & ((1 << room) - 1)) << offset
            acc[:, :, word + 1] |= x[m] >> room
    stream = acc.view(torch.uint8).view(n, groups, words, 8)[..., :_WORD_BYTES].reshape(n, groups, words * _WORD_BYTES)
    return stream[..., :group_bytes].reshape(n, groups * group_bytes)[:, :nbytes]


def _unpack(packed: torch.Tensor, c: int, b: int) -> torch.Tensor:
    """uint8 [N, ceil(c*b/8)] -> LongTensor codes [N, c] (inverse of _pack; any bits decode, to values below 2**b)."""
    n, nbytes = packed.shape
    if b == 8:
        return packed.long()
    if b == 16:
        return packed.contiguous().view(torch.int16).long() & 0xFFFF
    if b == 1:
        bits = (packed.unsqueeze(-1) & _BYTE_WEIGHTS.to(packed.device)).ne(0).view(torch.uint8)
        return bits.view(n, nbytes * 8)[:, :c].long()
    g, group_bytes, groups, words = _group_layout(c, b)
    stream = F.pad(packed, (0, groups * group_bytes - nbytes)).view(n, groups, group_bytes)
    stream = F.pad(stream, (0, words * _WORD_BYTES - group_bytes)).view(n, groups, words, _WORD_BYTES)
    acc = F.pad(stream, (0, 8 - _WORD_BYTES)).view(torch.int64).view(n, groups, words)
    codes = torch.empty(n, groups, g, dtype=torch.int64, device=packed.device)
    mask = (1 << b) - 1
    for m in range(g):
        word, offset = divmod(m * b, _WORD_BITS)
        room = _WORD_BITS - offset
        if b <= room:
            codes[:, :, m] = (acc[:, :, word] >> offset) & mask
        else:
            codes[:, :, m] = (acc[:, :, word] >> offset) | ((acc[:, :, word + 1] << room) & mask)
    return codes.view(n, groups * g)[:, :c]


def _group_layout(c: int, b: int) -> tuple[int, int, int, int]:
    """(variables per group, bytes per group, groups per item, words per group) of the general path.

    g = 8 / gcd(b, 8) variables of b bits end exactly on a byte boundary (lcm(b, 8) bits <= 120), so an item
    is a sequence of groups, each assembled in 56-bit words: 7 bytes each, never touching an int64's sign bit.
    """
    g = 8 // math.gcd(b, 8)
    return g, g * b // 8, -(-c // g), -(-g * b // _WORD_BITS)


def _check_c(c: int) -> None:
    if isinstance(c, bool) or int(c) != c or c < 1:
        raise ValueError(f"c (variables per item) must be an integer >= 1, got {c!r}")


def _check_l(l: int) -> None:
    if isinstance(l, bool) or int(l) != l or not 2 <= l <= MAX_VALUES:
        raise ValueError(f"l (values per variable) must be an integer in [2, {MAX_VALUES}], got {l!r}")
