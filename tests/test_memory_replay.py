"""ReplayInterleaver: N mini-batches drawn and decoded before the updates, stored labels or teacher targets, errors."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from lossy_memory.callbacks import RecollectionWriter, find_writer
from lossy_memory.memory import LosslessBuffer, RandomSampling, RecollectionBuffer, ReplayInterleaver
from test_callbacks_recollection_writer import TinyData, make_trainer

C = 4  # 4 binary codes decode to a 1x2x2 image holding them, so a recollection shows which code it came from


pytestmark = pytest.mark.usefixtures("one_thread")


def code_label(codes: torch.Tensor) -> torch.Tensor:
    """A label that is a function of the code (binary number), so replayed rows can be checked against it."""
    return (codes * torch.tensor([8, 4, 2, 1])).sum(dim=1) % 10


def filled_buffer(n: int = 20, **kwargs) -> RecollectionBuffer:
    buffer = RecollectionBuffer(C, 2, capacity=50, num_tasks=4, **kwargs)
    codes = torch.randint(2, (n, C), generator=torch.Generator().manual_seed(1))
    buffer.add(codes, code_label(codes), torch.full((n,), 3))
    return buffer


class VersionedGenerator(torch.nn.Module):
    """A generator whose version counts the optimizer steps taken on it; its images and targets carry the version
    they were made with, and every decode call is logged with the version of that moment."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.version, self.decoded_at = 0, []

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        self.decoded_at.append(self.version)
        return torch.full((len(codes), 1, 2, 2), float(self.version))

    def teach(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x), 3), float(self.version))


def incoming(n: int = 5, tasks: bool = False) -> dict:
    batch = {"x": torch.full((n, 1, 2, 2), -1.0), "y": torch.arange(n)}
    if tasks:
        batch["task"] = torch.zeros(n, dtype=torch.long)
    return batch


@pytest.mark.parametrize("n_updates", [1, 3])
def test_all_n_minibatches_are_drawn_and_decoded_before_the_first_update(n_updates):
    generator = VersionedGenerator()
    optimizer = torch.optim.SGD(generator.parameters(), lr=0.1)
    optimizer.register_step_post_hook(lambda *_: setattr(generator, "version", generator.version + 1))
    replay = ReplayInterleaver(filled_buffer(), updates=n_updates, replay_size=6)
    for step in range(2):  # two incoming batches
        batches = replay.interleave(incoming(), decoder=generator.decode, teacher=generator.teach)
        made_with = generator.version
        assert len(batches) == n_updates and generator.decoded_at[-n_updates:] == [made_with] * n_updates
        for k, mixed in enumerate(batches):
            assert generator.version == made_with + k  # the k-th update trains on recollections k updates old
            assert torch.equal(mixed["x"][mixed["replayed"]], torch.full((6, 1, 2, 2), float(made_with)))
            assert torch.equal(mixed["y"], torch.full((11, 3), float(made_with)))  # teacher targets, from before the updates
            optimizer.zero_grad()
            (generator.weight * mixed["x"].mean()).backward()
            optimizer.step()
    assert generator.version == 2 * n_updates


def test_stored_labels_and_tasks_follow_their_recollections():
    replay = ReplayInterleaver(filled_buffer(), updates=2, replay_size=7)
    batches = replay.interleave(incoming(tasks=True), decoder=lambda codes: codes.float().view(-1, 1, 2, 2))
    for mixed in batches:
        assert mixed["x"].shape == (12, 1, 2, 2) and mixed["replayed"].tolist() == [False] * 5 + [True] * 7
        assert torch.equal(mixed["x"][:5], incoming()["x"]) and torch.equal(mixed["y"][:5], torch.arange(5))
        codes = mixed["x"][5:].flatten(1).long()
        assert torch.equal(mixed["y"][5:], code_label(codes))
        assert mixed["task"].tolist() == [0] * 5 + [3] * 7
    assert not torch.equal(batches[0]["x"], batches[1]["x"])  # two separate draws


def test_replay_size_defaults_to_the_incoming_batch_size_and_an_empty_buffer_replays_nothing():
    replay = ReplayInterleaver(filled_buffer(), updates=2)
    assert all(len(mixed["x"]) == 10 for mixed in replay.interleave(incoming(), decoder=lambda c: c.float().view(-1, 1, 2, 2)))
    empty = ReplayInterleaver(RecollectionBuffer(C, 2, capacity=5), updates=3)
    batches = empty.interleave(incoming(tasks=True), decoder=None)
    assert len(batches) == 3
    for mixed in batches:
        assert torch.equal(mixed["x"], incoming()["x"]) and not mixed["replayed"].any() and "task" in mixed


def test_a_lossless_buffer_needs_no_decoder():
    buffer = LosslessBuffer((1, 2, 2), capacity=5)
    buffer.add(torch.full((3, 1, 2, 2), 255, dtype=torch.uint8), torch.tensor([7, 7, 7]), 0)
    mixed = ReplayInterleaver(buffer, replay_size=2).interleave(incoming())[0]
    assert torch.equal(mixed["x"][5:], torch.ones(2, 1, 2, 2)) and mixed["y"][5:].tolist() == [7, 7]


def test_code_sampled_recollections_need_a_teacher():
    replay = ReplayInterleaver(filled_buffer(), sampling=RandomSampling(source="codes"), replay_size=3)
    decoder = lambda codes: codes.float().view(-1, 1, 2, 2)  # noqa: E731
    with pytest.raises(ValueError, match="pass a teacher"):
        replay.interleave(incoming(), decoder=decoder)
    mixed = replay.interleave(incoming(), decoder=decoder, teacher=lambda x: x.flatten(1).sum(1))[0]
    assert torch.equal(mixed["y"], mixed["x"].flatten(1).sum(1))
    with pytest.raises(ValueError, match="no task ids"):
        replay.interleave(incoming(tasks=True), decoder=decoder, teacher=lambda x: x.flatten(1).sum(1))


@pytest.mark.parametrize("updates", [0, -1, 1.5, True])
def test_fewer_than_one_update_is_rejected(updates):
    with pytest.raises(ValueError, match="updates .* must be an integer >= 1"):
        ReplayInterleaver(filled_buffer(), updates=updates)


def test_bad_input_is_rejected_clearly():
    with pytest.raises(ValueError, match="replay_size"):
        ReplayInterleaver(filled_buffer(), replay_size=0)
    with pytest.raises(ValueError, match="ExperienceBuffer"):
        ReplayInterleaver([1, 2, 3])
    replay = ReplayInterleaver(filled_buffer())
    with pytest.raises(ValueError, match="recollections have shape"):
        replay.interleave(incoming(), decoder=lambda codes: torch.zeros(len(codes), 1, 3, 3))
    with pytest.raises(ValueError, match="one target per image"):
        replay.interleave(incoming(), decoder=lambda codes: torch.zeros(len(codes), 1, 2, 2), teacher=lambda x: x[:1])


class TinyReplayLearner(L.LightningModule):
    """A tiny autoencoder learning a stream with rehearsal, the way a continual learner uses the interleaver:
    manual optimisation, N updates per incoming batch, its own decoder generating the recollections."""

    def __init__(self, updates: int, replay_size: int):
        super().__init__()
        self.automatic_optimization = False
        self.encoder, self.decoder = torch.nn.Linear(784, 6), torch.nn.Linear(6, 784)
        self.updates, self.replay_size, self.seen = updates, replay_size, []

    def setup(self, stage: str) -> None:
        self.replay = ReplayInterleaver(find_writer(self.trainer).buffer, self.updates, self.replay_size)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (self.encoder(x.flatten(1)) > 0).long()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(codes.float())).view(-1, 1, 28, 28)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        optimizer = self.optimizers()
        for mixed in self.replay.interleave(batch, decoder=self.decode):
            self.seen.append((int(mixed["replayed"].sum()), len(mixed["x"])))
            x = mixed["x"]
            loss = F.l1_loss(torch.sigmoid(self.decoder(torch.tanh(self.encoder(x.flatten(1))))).view_as(x), x)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_tiny_model_rehearses_what_the_writer_stored():
    writer = RecollectionWriter(RecollectionBuffer(6, 2, capacity=100), when="stream")
    model = TinyReplayLearner(updates=2, replay_size=3)
    trainer = make_trainer(1, [writer])
    trainer.fit(model, datamodule=TinyData())
    assert trainer.global_step == 2 * 5  # N updates for each of the 5 incoming batches
    # nothing is stored before the first incoming batch has been trained on; then 3 recollections beside its 8 examples
    assert model.seen == [(0, 8), (0, 8)] + [(3, 11)] * 8
    assert writer.buffer.num_seen == 40  # the writer stored the incoming examples only, never the recollections
