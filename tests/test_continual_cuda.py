"""On a GPU: the memory's stores follow the learner onto the device, and steps of lossless and of recollection
replay run without the host ever waiting for the device (``torch.cuda.set_sync_debug_mode("error")`` turns any
synchronisation into an error). Skipped without CUDA; run on a GPU machine with ``pytest tests/test_continual_cuda.py``."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from lossy_memory.memory import EpisodicMemory
from lossy_memory.models import DiscreteVAE
from lossy_memory.nets import MLP, CategoricalLatent, ConvDecoder, ConvEncoder
from lossy_memory.strategies import ContinualStep, ExperienceReplay

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
SHAPE, CUDA = (1, 28, 28), torch.device("cuda")


def replay_step(kind: str) -> ContinualStep:
    generator = None
    if kind == "recollection":
        generator = DiscreteVAE(CategoricalLatent(38, 2), partial(ConvEncoder), partial(ConvDecoder), partial(torch.optim.Adam, lr=1e-3),
                                image_shape=SHAPE, hidden=8)
    memory = EpisodicMemory(kind, lossless_equivalent=2 if generator is not None else 20, generator=generator,
                            anchor_weight=1.0 if generator is not None else 0.0, seed=1)
    step = ContinualStep(ExperienceReplay(), memory)
    net = MLP(SHAPE, 10, hidden=[100, 100]).to(CUDA)
    step.prepare(net, SHAPE, 10, [(0, 1), (2, 3)])
    memory.to(CUDA)
    memory.place(CUDA)
    step.use_optimizers(step.optimizers(partial(torch.optim.SGD, lr=0.1)))
    return step


def batches(count: int, task: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(task)
    return [{"x": torch.rand(10, *SHAPE, generator=g).to(CUDA), "y": (2 * task + torch.randint(2, (10,), generator=g)).to(CUDA),
             "task": torch.full((10,), task).to(CUDA)} for _ in range(count)]


def test_the_stores_follow_the_learner_onto_the_gpu_with_their_contents():
    memory = EpisodicMemory("lossless", lossless_equivalent=20, seed=1)
    memory.build(SHAPE, 10, 2)
    x = torch.rand(30, *SHAPE)
    memory.add(x, torch.arange(30) % 10, 0)
    before = memory.contents()
    memory.place(CUDA)
    assert all(store.device.type == "cuda" for store in memory.stores.values())
    after = memory.contents(device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("kind", ["lossless", "recollection"])
def test_replay_steps_never_wait_for_the_gpu(kind):
    step = replay_step(kind)
    step.begin_task(0)
    for batch in batches(30, 0):  # fills the memory and makes the first allocations
        step(batch)
    step.end_task(0)  # the generator's anchor snapshot: later steps decode with both
    step.begin_task(1)
    warm = batches(40, 1)
    for batch in warm[:5]:
        step(batch)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in warm[5:]:  # reservoir draws, writes and replay with a full memory
            logs = step(batch)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert logs["loss"].is_cuda and len(step.memory) == step.memory.capacity
