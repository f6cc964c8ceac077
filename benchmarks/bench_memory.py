"""Recollection memory: code packing, reservoir insertion, decoding, and replay-selection costs.

Per-core figures (packing, reservoir, buffer sampling) run with torch.set_num_threads(1); decoding and selection
use the default thread count. Times are the best of several repeats (least disturbed by other processes).
Packing: ``pack_codes`` rows (one per item) and ``pack_stream`` (one bitstream, what RecollectionBuffer stores);
c=38, l=2 is 38 bits per item, blocks of 4 items, so buffer writes and reads there go through whole blocks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from lossy_memory.memory import (
    ActiveDiverseSampling,
    ActiveSampling,
    CandidateScores,
    DiverseSampling,
    RandomSampling,
    RecollectionBuffer,
    pack_codes,
    unpack_codes,
)
from lossy_memory.memory.packing import pack_stream, unpack_stream
from lossy_memory.models import DiscreteVAE
from lossy_memory.nets import CategoricalLatent, ConvDecoder, ConvEncoder

PACK_TARGET = 1e8  # latent variables per second per core, l = 2
C, L, IMAGE = 168, 2, (1, 28, 28)


def best_time(fn: Callable[[], object], repeats: int = 5, min_seconds: float = 0.05) -> float:
    """Seconds per call: best over `repeats` runs of enough calls to last `min_seconds`."""
    fn()  # warm-up
    start, calls = time.perf_counter(), 0
    while calls == 0 or time.perf_counter() - start < min_seconds:
        fn()
        calls += 1
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def packing_rows(items: int, l: int, device: str = "cpu", c: int = C, stream: bool = False) -> list[tuple[str, float, str, str]]:
    codes = torch.randint(l, (items, c), device=device)
    pack, unpack = (pack_stream, lambda p: unpack_stream(p, items, c, l)) if stream else (pack_codes, lambda p: unpack_codes(p, c, l))
    packed = pack(codes, l)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rows = []
    for name, fn in (("pack", lambda: pack(codes, l)), ("unpack", lambda: unpack(packed))):
        rate = codes.numel() / best_time(lambda fn=fn: (fn(), sync()))
        ratio = f"{rate / PACK_TARGET:.2f}x target 1e8/s" if l == 2 else ""
        what = f"{name}{'_stream' if stream else '_codes'} l={l}, {items:,}x{c}"
        rows.append((f"{what} ({device}, {'1 thread' if device == 'cpu' else 'GPU'})", rate, "variables/s", ratio))
    return rows


def reservoir_row(c: int = C, stream: int = 1_000_000, batch: int = 128, capacity: int = 100_000) -> tuple[str, float, str, str]:
    pool = torch.randint(L, (8192, c), dtype=torch.uint8)
    labels = torch.randint(10, (8192,))
    starts = [(i * batch) % (8192 - batch) for i in range(stream // batch)]

    def fill() -> None:
        buffer = RecollectionBuffer(c, L, capacity=capacity)
        for s in starts:
            buffer.add(pool[s : s + batch], labels[s : s + batch], 0)

    seconds = best_time(fill, repeats=2, min_seconds=0)
    k = RecollectionBuffer(c, L, capacity=1).block_items
    return (f"reservoir insert {stream:,} items of c={c} (k={k}), batches of {batch}, capacity {capacity:,} (1 thread)",
            stream / seconds, "items/s", "")


def sampling_row(c: int = C, n: int = 1024, capacity: int = 100_000) -> tuple[str, float, str, str]:
    buffer = RecollectionBuffer(c, L, capacity=capacity)
    buffer.add(torch.randint(L, (capacity, c), dtype=torch.uint8), torch.randint(10, (capacity,)), 0)
    k = buffer.block_items
    return (f"buffer sample {n:,} of {capacity:,} items of c={c} (k={k}) (1 thread)", n / best_time(lambda: buffer.sample(n)), "items/s", "")


class Replay:
    """A realistic scorer: decode candidates (DiscreteVAE), run student and teacher once on all of them;
    score = L1 distance of their class probabilities, features = the teacher's hidden layer."""

    def __init__(self, vae: DiscreteVAE, buffer: RecollectionBuffer):
        torch.manual_seed(0)
        self.vae, self.buffer = vae, buffer
        self.teacher_body, self.teacher_head = nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.ReLU()), nn.Linear(100, 10)
        self.student = nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 10))

    @torch.no_grad()
    def __call__(self, candidates) -> CandidateScores:
        images = self.buffer.decode(self.vae.decode, candidates.data)
        hidden = self.teacher_body(images)
        disagreement = (self.teacher_head(hidden).softmax(1) - self.student(images).softmax(1)).abs().sum(1)
        return CandidateScores(scores=disagreement, features=hidden)


def selection_rows(vae: DiscreteVAE, buffer: RecollectionBuffer, n: int = 64) -> list[tuple[str, float, str, str]]:
    scorer = Replay(vae, buffer)
    strategies = {"random (buffer sampling)": RandomSampling(), "active, k=10": ActiveSampling(10),
                  "diverse MSSS, k=10": DiverseSampling(10), "diverse DPP, k=10": DiverseSampling(10, method="dpp"),
                  "active+diverse, k=10": ActiveDiverseSampling(10)}
    rows, base = [], None
    for name, strategy in strategies.items():
        # what a rehearsal step pays for n replay images: select (scoring all candidates), then decode the kept n
        seconds = best_time(lambda s=strategy: buffer.decode(vae.decode, s.select(buffer, n, scorer).data), repeats=3, min_seconds=0)
        per_example = seconds / n * 1e6
        base = base or per_example
        rows.append((f"replay {n} examples: {name}", per_example, "us/example", f"{per_example / base:.1f}x random"))
    # the selection algorithms alone, scores and features of the 10n candidates already computed
    candidates = buffer.sample(10 * n)
    said = scorer(candidates)
    for name, strategy in list(strategies.items())[1:]:
        seconds = best_time(lambda s=strategy: s.choose(candidates, n, lambda _: said))
        rows.append((f"  choose {n} of {10 * n} only: {name}", seconds / n * 1e6, "us/example", f"{seconds / n * 1e6 / base:.3f}x random replay"))
    return rows


def main() -> None:
    threads = torch.get_num_threads()
    rows = []
    torch.set_num_threads(1)
    try:
        for l in (2, 16, 256):
            rows += packing_rows(4096, l)
        rows += packing_rows(65536, 2)
        rows += packing_rows(65536, 2, c=38, stream=True)
        rows += packing_rows(65536, 16, c=38, stream=True)
        rows += [reservoir_row(C), reservoir_row(38)]
        rows += [sampling_row(C), sampling_row(38)]
    finally:
        torch.set_num_threads(threads)
    if torch.cuda.is_available():
        for l in (2, 16, 256):
            rows += packing_rows(65536, l, "cuda")

    vae = DiscreteVAE(CategoricalLatent(C, L), partial(ConvEncoder), partial(ConvDecoder), partial(torch.optim.Adam), image_shape=list(IMAGE)).eval()
    buffer = RecollectionBuffer(C, L, capacity=10_000)
    buffer.add(torch.randint(L, (10_000, C)), torch.randint(10, (10_000,)), 0)
    codes = buffer.sample(1024).data
    decode_rate = 1024 / best_time(lambda: buffer.decode(vae.decode, codes, batch_size=256), repeats=3, min_seconds=0)
    rows.append((f"decode recollections c={C}, l={L}, {IMAGE} ({threads} threads)", decode_rate, "images/s", ""))
    rows += selection_rows(vae, buffer)

    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'value':>12}  {'unit':<12}  ratio")
    for name, value, unit, ratio in rows:
        print(f"{name:<{width}}  {value:>12.4g}  {unit:<12}  {ratio}")


if __name__ == "__main__":
    main()
