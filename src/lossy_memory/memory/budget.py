"""Bit budgets: what a recollection costs, how many fit, and which (c, l) to pick (paper, Appendix B).

Two constraints from the paper. Incremental (eq. 5): each incoming example brings gamma/N bits, of which
a fraction rho of examples is stored, so rho * bits(c, l) <= gamma/N. Total (eq. 6): over the N
examples of the stream the generator's own parameters are paid for too, rho * N * bits(c, l) + |theta|(c, l)
<= gamma. Among feasible (c, l) we maximise the capacity C = c * log2(l) (bits of information per item),
breaking ties by the cheaper generator. bits(c, l) is the paper's c * ceil(log2 l), exactly what
RecollectionBuffer spends on an item's codes (they are packed as one bitstream, no padding per item), plus
label and task bits when asked to count them.

Accounting used by the buffers: a stored recollection costs c * ceil(log2 l) code bits plus the storage bits
of its label and task id (smallest integer dtypes that fit). A buffer of n recollections holds its codes in
ceil(n * c * ceil(log2 l) / 8) bytes: ``bits_used`` counts n * c * ceil(log2 l), and a capacity derived from
a budget leaves room for the at most 7 bits that complete the last byte (``occupied_bits``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

from lossy_memory.memory.packing import MAX_VALUES, bits_per_variable
from lossy_memory.nets import ConvEncoder

PARAMETER_BITS = 32  # float32 weights


# -- what an item costs ------------------------------------------------------------------------------
def storage_dtype(num_values: int) -> torch.dtype:
    """Smallest integer dtype holding every value in [0, num_values)."""
    if isinstance(num_values, bool) or int(num_values) != num_values or num_values < 1:
        raise ValueError(f"number of distinct values must be an integer >= 1, got {num_values!r}")
    for dtype, limit in ((torch.uint8, 2**8), (torch.int16, 2**15), (torch.int32, 2**31)):
        if num_values <= limit:
            return dtype
    return torch.int64


def label_task_bits(num_classes: int, num_tasks: int) -> int:
    """Bits a stored label plus a stored task id occupy."""
    return 8 * (storage_dtype(num_classes).itemsize + storage_dtype(num_tasks).itemsize)


def code_bits(c: int, l: int) -> int:
    """Bits of one recollection's codes: c * ceil(log2 l) (paper, eq. 5)."""
    if isinstance(c, bool) or int(c) != c or c < 1:
        raise ValueError(f"c (variables per item) must be an integer >= 1, got {c!r}")
    return int(c) * bits_per_variable(l)


def recollection_bits(c: int, l: int, num_classes: int, num_tasks: int) -> int:
    """Stored bits of one recollection: its codes (c * ceil(log2 l), no padding), label and task id."""
    return code_bits(c, l) + label_task_bits(num_classes, num_tasks)


def lossless_bits(image_shape: Sequence[int], num_classes: int, num_tasks: int) -> int:
    """Stored bits of one lossless item: 8 bits per pixel and channel, label, task id."""
    return 8 * math.prod(image_shape) + label_task_bits(num_classes, num_tasks)


def occupied_bits(n: int, item_bits: int, packed_bits: int = 0) -> int:
    """Bits that n items of ``item_bits`` bits occupy when ``packed_bits`` of each item (a recollection's codes)
    lie in one bitstream of whole bytes: n * item_bits plus the (at most 7) bits that complete its last byte."""
    return n * item_bits + (-n * packed_bits) % 8


def capacity_for_budget(budget_bits: float, item_bits: int, packed_bits: int = 0) -> int:
    """Most items of ``item_bits`` bits whose ``occupied_bits`` fit in ``budget_bits`` (at least one, or ValueError).

    ``packed_bits``: the part of each item packed into one stream of whole bytes (0: items are whole bytes already).
    The answer is floor(budget / item_bits), or one less when the stream's last partial byte would not fit.
    """
    if isinstance(item_bits, bool) or int(item_bits) != item_bits or item_bits < 1:
        raise ValueError(f"item_bits must be an integer >= 1, got {item_bits!r}")
    if isinstance(packed_bits, bool) or int(packed_bits) != packed_bits or not 0 <= packed_bits <= item_bits:
        raise ValueError(f"packed_bits must be an integer in [0, item_bits={item_bits}], got {packed_bits!r}")
    n = _items_that_fit(budget_bits, int(item_bits), int(packed_bits))
    if n == 0:
        one = occupied_bits(1, int(item_bits), int(packed_bits))
        detail = f" ({one} bits with its last byte filled)" if one != item_bits else ""
        raise ValueError(f"a budget of {budget_bits} bits is too small for one item of {item_bits} bits{detail}")
    return n


def _items_that_fit(budget_bits: float, item_bits: int, packed_bits: int) -> int:
    """capacity_for_budget without the errors: 0 when not even one item fits (or the budget is NaN / negative)."""
    if not budget_bits >= item_bits:  # also rejects NaN
        return 0
    n = int(budget_bits // item_bits)
    while n and occupied_bits(n, item_bits, packed_bits) > budget_bits:
        n -= 1
    return n


def recollections_for_lossless(k: int, image_shape: Sequence[int], c: int, l: int, side: int = 0) -> int:
    """How many recollections take the bits of k lossless images (k * 8*C*H*W bits).

    ``side``: bits stored beside each item on both sides (``label_task_bits``), so that equal-bits buffers
    compare exactly: LosslessBuffer(capacity=k) and RecollectionBuffer(budget_bits=its bits).
    """
    if int(k) != k or k < 1:
        raise ValueError(f"number of lossless images must be an integer >= 1, got {k!r}")
    bits = code_bits(c, l)
    return capacity_for_budget(k * (8 * math.prod(image_shape) + side), bits + side, packed_bits=bits)


# -- what the generator costs ------------------------------------------------------------------------
def generator_parameters(c: int, l: int, image_shape: Sequence[int], kernel_size: int = 5, depth: int = 3,
                         hidden: int | None = None) -> int:
    """Parameters of the DiscreteVAE (ConvEncoder + ConvDecoder, ``hidden`` filters (None: c*l/4), and the latent's
    LayerNorm on the c*l logits) for c variables of l values.

    A closed form, so that sizes too big to build (c*l/4 filters for l = 65536) cost nothing to evaluate;
    tests check it against the modules themselves.
    """
    channels = int(image_shape[0])
    hidden = max(1, c * l // 4) if hidden is None else int(hidden)
    width = c * l  # encoder logits and decoder one-hot input
    cells = _feature_cells(tuple(int(s) for s in image_shape), kernel_size, depth)
    k2 = kernel_size**2
    middle = (depth - 1) * (hidden * hidden * k2 + hidden)  # the hidden->hidden (transposed) convolutions, each side
    encoder = channels * hidden * k2 + hidden + middle + hidden * cells * width + width
    decoder = width * hidden * cells + hidden * cells + middle + hidden * channels * k2 + channels
    latent = 2 * width  # LayerNorm gain and bias
    return encoder + decoder + latent


@lru_cache
def _feature_cells(image_shape: tuple[int, ...], kernel_size: int, depth: int) -> int:
    """Height * width of the encoder's last feature map, read off a 1-filter encoder, built without touching the global
    RNG: sizing a memory from its budget happens while a seeded run is being set up, and must not change its draws."""
    with torch.random.fork_rng(devices=[]):
        return ConvEncoder(image_shape, out_features=1, hidden=1, kernel_size=kernel_size, depth=depth).head.in_features


# -- choosing (c, l) ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """One (c, l) and what it costs; ``items`` is set when a total budget is given."""

    c: int
    l: int
    code_bits: int  # c * ceil(log2 l), the paper's bits per item
    stored_bits: int  # what is constrained per item: code_bits, plus label/task bits if counted
    parameter_bits: int
    items: int | None = None

    @property
    def capacity(self) -> float:
        """C = c * log2(l): information per item, the quantity maximised."""
        return self.c * math.log2(self.l)

    def key(self) -> tuple[float, int, int, int]:
        """Sort key, best first: highest capacity, then fewest parameter bits, fewest bits per item, smallest l."""
        return (-round(self.capacity, 9), self.parameter_bits, self.stored_bits, self.l)


@dataclass(frozen=True)
class BudgetProblem:
    """The inputs of Appendix B. ``num_classes``/``num_tasks`` None: labels are not counted (the paper's convention)."""

    bits_per_example: float  # gamma / N
    rho: float = 1.0
    total_bits: float | None = None  # gamma; enables the total constraint (eq. 6)
    image_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int | None = None
    num_tasks: int | None = None
    l_max: int = MAX_VALUES
    hidden: int | None = None  # the generator's filters (None: c*l/4, the paper's)

    def __post_init__(self) -> None:
        if not self.bits_per_example > 0:
            raise ValueError(f"bits per example must be > 0, got {self.bits_per_example}")
        if not 0 < self.rho <= 1:
            raise ValueError(f"rho (probability of storing an example) must be in (0, 1], got {self.rho}")
        if self.total_bits is not None and not self.total_bits >= self.bits_per_example:
            raise ValueError(f"total bits ({self.total_bits}) must cover at least one example of {self.bits_per_example} bits")
        if (self.num_classes is None) != (self.num_tasks is None):
            raise ValueError("give both num_classes and num_tasks (to count label and task bits) or neither")
        if len(self.image_shape) != 3:
            raise ValueError(f"image shape must be [channels, height, width], got {list(self.image_shape)}")
        bits_per_variable(self.l_max)  # validates l_max

    @property
    def side(self) -> int:
        return 0 if self.num_classes is None else label_task_bits(self.num_classes, self.num_tasks)

    @property
    def stream_length(self) -> float:
        """N = gamma / (gamma / N): examples the total budget pays for."""
        return self.total_bits / self.bits_per_example

    def item_bits(self, c: int, l: int) -> int:
        """Stored bits of one item: c * ceil(log2 l) code bits plus the counted side bits."""
        return code_bits(c, l) + self.side

    def max_c_incremental(self, l: int) -> int:
        """Largest c with rho * item_bits(c, l) <= gamma / N (eq. 5).

        The 1e-9 forgives float rounding of gamma/(N rho) (16.8 / 0.1 must allow 168 bits, not 167).
        """
        return max(0, math.floor((self.bits_per_example / self.rho - self.side) / bits_per_variable(l) + 1e-9))

    def fits_total(self, c: int, l: int) -> bool:
        """Eq. 6: rho * N items of item_bits(c, l) plus the generator's parameter bits fit in gamma (as in the paper;
        ``candidate(...).items`` says how many items the bits left over really hold, last partial byte included)."""
        items_bits = self.rho * self.stream_length * self.item_bits(c, l)
        return items_bits + self.parameter_bits(c, l) <= self.total_bits

    def parameter_bits(self, c: int, l: int) -> int:
        return PARAMETER_BITS * generator_parameters(c, l, self.image_shape, hidden=self.hidden)

    def candidate(self, c: int, l: int) -> Candidate:
        parameter_bits = self.parameter_bits(c, l)
        bits, stored = code_bits(c, l), self.item_bits(c, l)
        items = None if self.total_bits is None else _items_that_fit(self.total_bits - parameter_bits, stored, bits)
        return Candidate(c, l, bits, stored, parameter_bits, items)

    def best_c(self, l: int) -> int:
        """Largest feasible c for this l (0 if none): eq. 5, and eq. 6 when a total budget is given."""
        high = self.max_c_incremental(l)
        if self.total_bits is None or high == 0 or self.fits_total(high, l):
            return high
        low = 0  # invariant: low fits (or is 0), high does not; the generator only grows with c
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if self.fits_total(mid, l) else (low, mid)
        return low

    def candidates(self) -> list[Candidate]:
        """Best c for every l = 2^b (each b's only contender under eq. 5 alone), best first."""
        rows = []
        for b in range(1, bits_per_variable(self.l_max) + 1):
            l = min(2**b, self.l_max)
            if (c := self.best_c(l)) > 0:
                rows.append(self.candidate(c, l))
        return sorted(rows, key=Candidate.key)

    def solve(self) -> Candidate:
        """The (c, l) of highest capacity C = c log2 l; ValueError if even c=1, l=2 does not fit.

        Under eq. 5 alone, l below a power of two costs the same bits for less capacity, so only l = 2^b compete.
        Under eq. 6 a smaller l also means a smaller generator, so every l up to l_max is tried.
        """
        if self.total_bits is None:
            rows = self.candidates()
        else:
            rows = []
            for l in range(2, self.l_max + 1):
                if not self.fits_total(1, l):  # the generator only grows with l: nothing larger fits either
                    break
                if (c := self.best_c(l)) > 0:
                    rows.append(self.candidate(c, l))
        if not rows:
            raise ValueError(f"no (c, l) fits: {self}")
        return min(rows, key=Candidate.key)


def size_for_items(items: int, budget_bits: float, image_shape: Sequence[int], num_classes: int, num_tasks: int,
                   count_generator: bool = False, hidden: int | None = None, l_max: int = MAX_VALUES) -> Candidate:
    """The (c, l) of highest capacity whose ``items`` recollections, labels and task ids included, fit ``budget_bits``
    (Appendix B with rho * N = items: each stored item may cost budget / items bits, eq. 5). ``count_generator``: the
    generator's 32-bit parameters (``hidden`` filters; None: c*l/4) come out of the budget too (eq. 6).
    ValueError when not even c=1, l=2 fits."""
    if isinstance(items, bool) or int(items) != items or items < 1:
        raise ValueError(f"memory.recollections (how many recollections the budget is sized for) must be an integer >= 1, got {items!r}")
    problem = BudgetProblem(budget_bits / items, rho=1.0, total_bits=budget_bits if count_generator else None,
                            image_shape=tuple(int(s) for s in image_shape), num_classes=num_classes, num_tasks=num_tasks,
                            l_max=l_max, hidden=hidden)
    try:
        return problem.solve()
    except ValueError as error:
        raise ValueError(f"{items:,} recollections do not fit a budget of {budget_bits:,.0f} bits ({budget_bits / items:.1f} bits "
                         f"each, {problem.side} of them for the label and task id): lower memory.recollections or raise the "
                         "budget (memory.lossless_equivalent)") from error


# -- command line ------------------------------------------------------------------------------------
def format_table(rows: Sequence[Candidate], chosen: Candidate) -> str:
    header = f"{'':2}{'c':>7} {'l':>6} {'code bits':>10} {'stored bits':>12} {'capacity C':>11} {'param bits':>14} {'items that fit':>15}"
    lines = [header]
    for row in rows:
        items = "-" if row.items is None else f"{row.items:,}"
        mark = "*" if row == chosen else ""
        lines.append(f"{mark:2}{row.c:>7} {row.l:>6} {row.code_bits:>10} {row.stored_bits:>12} {row.capacity:>11.2f} "
                     f"{row.parameter_bits:>14,} {items:>15}")
    return "\n".join(lines)


def parameter_notes(chosen: Candidate, bits_per_example: float, rho: float, total_bits: float | None) -> list[str]:
    """Warnings when the chosen generator's own parameters dwarf what its codes cost (they are the real storage then)."""
    per_item = rho * chosen.stored_bits
    if total_bits is not None or chosen.parameter_bits <= 1000 * max(per_item, 1):
        return []
    examples = math.ceil(chosen.parameter_bits / max(per_item, 1e-9))
    return [f"note: this generator has {chosen.parameter_bits / PARAMETER_BITS:,.0f} parameters ({chosen.parameter_bits / 8e6:,.1f} MB "
            f"at 32 bits), {chosen.parameter_bits / max(per_item, 1e-9):,.0f}x what one stored item costs; the incremental "
            f"constraint does not count them, so they outweigh the codes for streams shorter than {examples:,} examples. "
            "Give --total-bits to count them (the paper's eq. 6)"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lossy_memory.budget", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bits-per-example", type=float, required=True, help="gamma/N: bits each incoming example brings")
    parser.add_argument("--rho", type=float, default=1.0, help="probability that an example is stored")
    parser.add_argument("--total-bits", type=float, help="gamma: total budget; the generator's parameters count too (eq. 6)")
    parser.add_argument("--image-shape", type=int, nargs=3, default=[1, 28, 28], metavar=("C", "H", "W"))
    parser.add_argument("--num-classes", type=int, help="count label storage bits (needs --num-tasks)")
    parser.add_argument("--num-tasks", type=int, help="count task-id storage bits (needs --num-classes)")
    parser.add_argument("--l-max", type=int, default=MAX_VALUES, help="largest l considered")
    parser.add_argument("--lossless-images", type=int, help="also print how many recollections take the bits of this many lossless images")
    args = parser.parse_args(argv)
    try:
        problem = BudgetProblem(args.bits_per_example, args.rho, args.total_bits, tuple(args.image_shape),
                                args.num_classes, args.num_tasks, args.l_max)
        chosen = problem.solve()
    except ValueError as error:
        parser.error(str(error))
    rows = problem.candidates()
    if chosen not in rows:
        rows = sorted([*rows, chosen], key=Candidate.key)
    print(format_table(rows, chosen))
    print(f"\nchosen: c={chosen.c}, l={chosen.l} ({chosen.code_bits} bits per item, capacity {chosen.capacity:.2f})")
    print(f"capacity = c * log2(l): the bits of information one stored item can carry, what the choice maximises among the "
          f"(c, l) whose items fit {args.bits_per_example:g} bits per incoming example (x rho={args.rho:g})")
    for line in parameter_notes(chosen, args.bits_per_example, args.rho, args.total_bits):
        print(line)
    if args.lossless_images:
        k = args.lossless_images
        n = recollections_for_lossless(k, args.image_shape, chosen.c, chosen.l, problem.side)
        print(f"{k:,} lossless images ({k * (8 * math.prod(args.image_shape) + problem.side):,} bits) "
              f"= {n:,} recollections of c={chosen.c}, l={chosen.l}")
