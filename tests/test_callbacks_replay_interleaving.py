"""Rehearsal by callbacks: a RecollectionWriter with an episodic memory and a ReplayInterleaving let any
LightningModule (a Reasoner) replay, through the memory API the continual learner uses."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from conftest import compose_config
from lossy_memory.callbacks import RecollectionWriter, ReplayInterleaving
from lossy_memory.memory import EpisodicMemory
from lossy_memory.models import DiscreteVAE, Reasoner
from lossy_memory.nets import MLP, CategoricalLatent, ConvDecoder, ConvEncoder
from test_callbacks_recollection_writer import TinyData, make_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


class TinyStream(TinyData):
    """TinyData with the shape and classes a memory is sized from (one task)."""

    image_shape, num_classes, num_tasks = (1, 28, 28), 10, 1


class Recorder(Reasoner):
    """A Reasoner that notes what each training step saw: (rows, replayed rows)."""

    def __init__(self):
        super().__init__(partial(MLP, hidden=[16]), partial(torch.optim.SGD, lr=0.1), (1, 28, 28), 10)
        self.seen: list[tuple[int, int]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((len(batch["x"]), int(batch.get("replayed", torch.zeros(0)).sum())))
        return super().training_step(batch, batch_idx)


class ManualRecorder(L.LightningModule):
    """Manual optimisation: one update per batch of ``batch["replay_batches"]``."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.net = torch.nn.Linear(784, 10)
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        self.seen.append([int(b["replayed"].sum()) for b in batch["replay_batches"]])
        for mixed in batch["replay_batches"]:
            loss = F.cross_entropy(self.net(mixed["x"].flatten(1)), mixed["y"])
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def lossless_memory(images: int = 20) -> EpisodicMemory:
    return EpisodicMemory("lossless", lossless_equivalent=images, seed=3)


def test_the_replay_rows_reach_an_unchanged_training_step_and_only_incoming_rows_are_stored():
    writer = RecollectionWriter(memory=lossless_memory(), when="stream")
    model = Recorder()
    make_trainer(1, [writer, ReplayInterleaving(replay_size=3)]).fit(model, datamodule=TinyStream())
    batches = len(model.seen)
    # nothing to replay before the first batch is stored; then 3 replayed rows beside each incoming 8
    assert model.seen == [(8, 0)] + [(11, 3)] * (batches - 1)
    stores = writer.memory.stores[0]
    assert stores.num_seen == 8 * batches  # the replayed rows were never offered again
    assert len(writer.memory) == 20 and writer.memory.bits_used() <= writer.memory.budget_bits


def test_n_replay_batches_reach_a_module_with_manual_optimisation():
    writer = RecollectionWriter(memory=lossless_memory(), when="stream")
    model = ManualRecorder()
    trainer = make_trainer(1, [writer, ReplayInterleaving(updates=3, replay_size=2)])
    trainer.fit(model, datamodule=TinyStream())
    assert model.seen[0] == [0, 0, 0] and all(s == [2, 2, 2] for s in model.seen[1:])
    assert trainer.global_step == 3 * len(model.seen)


def test_a_recollection_memory_trains_its_generator_and_stores_codes_within_budget():
    vae = DiscreteVAE(CategoricalLatent(8, 2), partial(ConvEncoder), partial(ConvDecoder), partial(torch.optim.Adam, lr=1e-3),
                      image_shape=(1, 28, 28), hidden=4)
    memory = EpisodicMemory("recollection", lossless_equivalent=2, generator=vae, seed=3)
    before = [p.detach().clone() for p in vae.parameters()]
    writer = RecollectionWriter(memory=memory, when="stream", generator_steps=2)
    make_trainer(1, [writer, ReplayInterleaving()]).fit(Recorder(), datamodule=TinyStream())
    assert any(not torch.equal(a, b) for a, b in zip(before, vae.parameters()))
    assert writer.generator_optimizer.state_dict()["state"][0]["step"] == 2 * len(TinyStream().train_dataloader())
    assert memory.capacity > 2 * 40  # 8-bit codes: many more items than 2 lossless images' bits
    assert len(memory) == 40  # every incoming example (the stream is shorter than the capacity), no replayed row
    assert memory.bits_used() <= memory.budget_bits


def test_the_memory_and_the_generator_optimizer_travel_in_the_writers_state():
    vae = DiscreteVAE(CategoricalLatent(8, 2), partial(ConvEncoder), partial(ConvDecoder), partial(torch.optim.Adam, lr=1e-3),
                      image_shape=(1, 28, 28), hidden=4)
    writer = RecollectionWriter(memory=EpisodicMemory("recollection", lossless_equivalent=2, generator=vae, seed=3), when="stream")
    make_trainer(1, [writer, ReplayInterleaving()]).fit(Recorder(), datamodule=TinyStream())
    state = writer.state_dict()
    twin_vae = DiscreteVAE(CategoricalLatent(8, 2), partial(ConvEncoder), partial(ConvDecoder), partial(torch.optim.Adam, lr=1e-3),
                           image_shape=(1, 28, 28), hidden=4)
    twin = RecollectionWriter(memory=EpisodicMemory("recollection", lossless_equivalent=2, generator=twin_vae, seed=3), when="stream")
    twin.memory.build((1, 28, 28), 10, 1)
    twin.load_state_dict(state)
    assert torch.equal(twin.memory.stores[0].stored_codes(), writer.memory.stores[0].stored_codes())
    assert all(torch.equal(a, b) for a, b in zip(twin_vae.parameters(), vae.parameters()))
    assert twin._optimizer_state["state"][0]["step"] == writer.generator_optimizer.state_dict()["state"][0]["step"]


def test_bad_wiring_is_refused_before_training():
    with pytest.raises(ValueError, match="either a buffer .* or an episodic memory"):
        RecollectionWriter()
    with pytest.raises(ValueError, match="when=stream"):
        RecollectionWriter(memory=lossless_memory(), when="last_epoch")
    with pytest.raises(ValueError, match="updates"):
        ReplayInterleaving(updates=0)
    with pytest.raises(ValueError, match="use updates=1"):  # the Reasoner makes one update per batch
        make_trainer(1, [RecollectionWriter(memory=lossless_memory(), when="stream"),
                         ReplayInterleaving(updates=2)]).fit(Recorder(), datamodule=TinyStream())
    from lossy_memory.memory import LosslessBuffer

    with pytest.raises(ValueError, match="episodic memory"):
        make_trainer(1, [RecollectionWriter(LosslessBuffer((1, 28, 28), capacity=5), when="stream"),
                         ReplayInterleaving()]).fit(Recorder(), datamodule=TinyStream())


def run_reasoner(callbacks: str, data_dir: Path, output_dir: Path) -> dict[str, float]:
    from lossy_memory.train import train

    overrides = ["model=reasoner", "model.num_classes=10", "classifier=mlp", "data=mnist_split", "data.num_tasks=3",
                 "data.batches_per_step=1", "data.batch_size=20", f"callbacks={callbacks}", "callbacks.model_checkpoint=null",
                 "callbacks.reconstruction_grid=null", "callbacks.rich_progress_bar=null", "callbacks.learning_rate_monitor=null",
                 "+trainer.enable_progress_bar=false", "trainer.max_epochs=1", "+trainer.limit_val_batches=0",
                 "+trainer.num_sanity_val_steps=0", "logger=csv", f"paths.data_dir={data_dir}", "seed=12345"]
    if callbacks == "replay":
        overrides.append("memory.lossless_equivalent=50")
    return train(compose_config(overrides, output_dir))


def test_a_reasoner_with_the_two_callbacks_forgets_less_on_split_mnist(real_data_dir, tmp_path):
    """Three tasks of split MNIST, one pass: without rehearsal a class-incremental classifier forgets the earlier
    tasks entirely; with 50 images' worth of lossless replay through the callbacks it keeps most of them."""
    plain = run_reasoner("default", real_data_dir, tmp_path / "plain")
    replayed = run_reasoner("replay", real_data_dir, tmp_path / "replayed")
    earlier = ["test_task0/accuracy", "test_task1/accuracy"]
    assert all(plain[k] < 0.05 for k in earlier), plain
    assert all(replayed[k] > 0.4 for k in earlier), replayed
    assert replayed["test_task2/accuracy"] > 0.9
