"""Bit-exact storage of categorical codes: c variables of l values cost c * ceil(log2 l) bits per item.

Layout (one row of ``bytes_per_item(c, l)`` bytes per item, items independent and addressable):
the item's variables form one little-endian bitstream, variable j occupying bits
[j*b, (j+1)*b) with its least significant bit first (b = ceil(log2 l)); bit p of the stream is bit
p % 8 of byte p // 8. Variables therefore straddle byte boundaries freely, and only the end of each item
is padded with zero bits up to a whole byte (at most 7 bits per item; none when c*b is a multiple of 8,
e.g. 168 binary variables = 21 bytes). Padding per item rather than one contiguous bitstream keeps every
item a fixed-size row, so a reservoir overwrites slot i by assigning row i, and sampling gathers rows.

Everything is torch, device-agnostic, and vectorised over items and variables: the only Python loops run
over the <= 8 variables of a byte-aligned group (see ``_group_layout``).
"""

from __future__ import annotations

import math
import sys

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
    """Bytes of one packed item: c * ceil(log2 l) bits rounded up to a whole byte."""
    _check_c(c)
    return -(-c * bits_per_variable(l) // 8)


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
    if codes.numel():
        low, high = torch.aminmax(codes)
        if low < 0 or high >= l:
            raise ValueError(f"codes must lie in [0, {l}) for l={l}, got values in [{int(low)}, {int(high)}]")


def pack_codes(codes: torch.Tensor, l: int) -> torch.Tensor:
    """Integer codes [N, c] with values in [0, l) -> packed uint8 [N, bytes_per_item(c, l)] on the same device."""
    check_codes(codes, None, l)
    n, c = codes.shape
    b = bits_per_variable(l)
    nbytes = bytes_per_item(c, l)
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


def unpack_codes(packed: torch.Tensor, c: int, l: int) -> torch.Tensor:
    """Packed uint8 [N, bytes_per_item(c, l)] -> LongTensor codes [N, c] on the same device (inverse of pack_codes)."""
    nbytes = bytes_per_item(c, l)
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8:
        raise ValueError(f"packed codes must be a uint8 tensor, got {getattr(packed, 'dtype', type(packed).__name__)}")
    if packed.dim() != 2 or packed.shape[1] != nbytes:
        raise ValueError(f"packed codes for c={c}, l={l} must have shape [N, {nbytes}], got {tuple(packed.shape)}")
    n = packed.shape[0]
    b = bits_per_variable(l)
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
