"""RecollectionWriter: what it stores (values), when, that checkpoints restore it bit for bit, and what it logs."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger

from lossy_memory.callbacks import RecollectionWriter, find_writer
from lossy_memory.callbacks.recollection_writer import is_last_epoch
from lossy_memory.data.batching import ImageTensorDataset, batch_loader
from lossy_memory.memory import LosslessBuffer, MixedBuffer, RecollectionBuffer
from lossy_memory.models import DiscreteVAE
from lossy_memory.nets import CategoricalLatent, ConvDecoder, ConvEncoder

C, L_VALUES, N_TRAIN, BATCH = 8, 4, 40, 8  # 5 batches an epoch


pytestmark = pytest.mark.usefixtures("one_thread")


class TinyData(L.LightningDataModule):
    """Random uint8 28x28 images served as MNIST is: {"x", "y"[, "task"]}, x as floats in [0, 1] after transfer.
    The test stage reads the training images."""

    test_splits = ["test"]

    def __init__(self, n: int = N_TRAIN, batch_size: int = BATCH, with_tasks: bool = False, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
        labels = torch.randint(0, 10, (n,), generator=g)
        tasks = torch.randint(0, 3, (n,), generator=g) if with_tasks else None
        self.train_set, self.batch_size = ImageTensorDataset(images, labels, tasks), batch_size

    def train_dataloader(self):
        return batch_loader(self.train_set, self.batch_size, shuffle=True, seed=1)

    def test_dataloader(self):
        return batch_loader(self.train_set, self.batch_size, shuffle=False)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        return {**batch, "x": batch["x"].float() / 255}


class TinyCoder(L.LightningModule):
    """A deterministic stand-in for the DiscreteVAE (sign of a linear map: c=6 binary codes), trained by SGD.

    No sampling noise anywhere, so a resumed run retraces an uninterrupted one exactly."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(784, 6)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (self.proj(x.flatten(1)) > 0).long()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return (self.proj(batch["x"].flatten(1)) - 0.1).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


class RecordingLogger(Logger):
    """Keeps every log_metrics call in memory."""

    def __init__(self):
        super().__init__()
        self.records: list[dict] = []

    name, version = "recording", 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.records.append(dict(metrics))


class CodeRecorder(L.Callback):
    """After each training batch: the epoch, the codes encode gives for it at that moment, labels and tasks."""

    def __init__(self):
        self.rows: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor | None]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        with torch.no_grad():
            self.rows.append((trainer.current_epoch, pl_module.encode(batch["x"]), batch["y"].clone(), batch.get("task")))


def make_vae(c: int = C, l: int = L_VALUES) -> DiscreteVAE:
    return DiscreteVAE(CategoricalLatent(c, l), functools.partial(ConvEncoder), functools.partial(ConvDecoder),
                       functools.partial(torch.optim.Adam, lr=1e-2), (1, 28, 28))


def make_trainer(max_epochs: int, callbacks: list, **kwargs) -> L.Trainer:
    options = dict(accelerator="cpu", devices=1, max_epochs=max_epochs, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0)
    return L.Trainer(callbacks=callbacks, **{**options, **kwargs})


def stored_codes(buffer: RecollectionBuffer) -> torch.Tensor:
    return buffer.stored_codes()


def assert_same_state(a: dict, b: dict) -> None:
    """Two buffer state dicts equal bit for bit (tensors, generator states, counters, config)."""
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


# -- what is written, and when --------------------------------------------------------------------------
@pytest.mark.parametrize("with_tasks", [False, True], ids=["no_tasks", "tasks"])
def test_last_epoch_stores_exactly_the_codes_encode_gives_for_the_last_epoch(with_tasks):
    torch.manual_seed(0)
    writer = RecollectionWriter(RecollectionBuffer(C, L_VALUES, capacity=100, num_tasks=3), when="last_epoch")
    recorder = CodeRecorder()
    make_trainer(3, [writer, recorder]).fit(make_vae(), datamodule=TinyData(with_tasks=with_tasks))

    last = [row for row in recorder.rows if row[0] == 2]
    assert len(last) == N_TRAIN // BATCH and {row[0] for row in recorder.rows} == {0, 1, 2}
    codes, labels, tasks = writer.buffer.stored
    assert writer.buffer.num_seen == N_TRAIN  # only the last epoch, once
    assert torch.equal(stored_codes(writer.buffer), torch.cat([row[1] for row in last]))
    assert torch.equal(labels.long(), torch.cat([row[2] for row in last]))
    expected_tasks = torch.cat([row[3] for row in last]) if with_tasks else torch.zeros(N_TRAIN, dtype=torch.long)
    assert torch.equal(tasks.long(), expected_tasks)


def test_stream_stores_every_batch_as_it_arrives_through_the_reservoir():
    writer = RecollectionWriter(RecollectionBuffer(6, 2, capacity=1000, seed=3), when="stream")
    recorder = CodeRecorder()
    make_trainer(2, [writer, recorder]).fit(TinyCoder(), datamodule=TinyData())
    assert writer.buffer.num_seen == len(writer.buffer) == 2 * N_TRAIN
    assert torch.equal(stored_codes(writer.buffer), torch.cat([row[1] for row in recorder.rows]))

    small = RecollectionWriter(RecollectionBuffer(6, 2, capacity=7, seed=3), when="stream")
    make_trainer(2, [small]).fit(TinyCoder(), datamodule=TinyData())
    assert small.buffer.num_seen == 2 * N_TRAIN and len(small.buffer) == 7


def test_write_stores_images_for_lossless_and_both_for_mixed_buffers():
    model = TinyCoder()
    x = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    batch = {"x": x.float() / 255, "y": torch.arange(5)}
    lossless = RecollectionWriter(LosslessBuffer((1, 28, 28), capacity=10))
    lossless.write(model, batch)
    assert torch.equal(lossless.buffer.stored[0], x)
    mixed = RecollectionWriter(MixedBuffer(6, 2, (1, 28, 28), budget_bits=10 * 8 * 800, lossy_fraction=0.5))
    mixed.write(model, batch)
    assert torch.equal(stored_codes(mixed.buffer.lossy), model.encode(batch["x"]))
    assert torch.equal(mixed.buffer.lossless.stored[0], x)


def test_encoding_happens_without_gradients_in_eval_mode_and_restores_the_modes():
    class Probe(TinyCoder):
        def __init__(self):
            super().__init__()
            self.frozen = torch.nn.Dropout()
            self.seen = None

        def encode(self, x):
            self.seen = (self.training, self.frozen.training, torch.is_grad_enabled())
            return super().encode(x)

    model = Probe()
    model.frozen.eval()
    RecollectionWriter(RecollectionBuffer(6, 2, capacity=10)).write(model, {"x": torch.rand(2, 1, 28, 28), "y": torch.zeros(2, dtype=torch.long)})
    assert model.seen == (False, False, False)
    assert model.training and not model.frozen.training


def test_is_last_epoch_needs_a_finite_max_epochs():
    assert is_last_epoch(SimpleNamespace(max_epochs=3, current_epoch=2))
    assert not is_last_epoch(SimpleNamespace(max_epochs=3, current_epoch=1))
    assert not is_last_epoch(SimpleNamespace(max_epochs=-1, current_epoch=0))
    assert not is_last_epoch(SimpleNamespace(max_epochs=None, current_epoch=0))


# -- checkpoints ----------------------------------------------------------------------------------------
def fit_stream(tmp_path: Path, max_epochs: int, ckpt_path: str | None = None, capacity: int = 30) -> RecollectionWriter:
    writer = RecollectionWriter(RecollectionBuffer(6, 2, capacity=capacity, seed=5), when="stream")
    checkpoints = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1, save_last=True)
    make_trainer(max_epochs, [writer, checkpoints], enable_checkpointing=True).fit(TinyCoder(), datamodule=TinyData(), ckpt_path=ckpt_path)
    return writer


def test_checkpoints_restore_the_buffer_bit_for_bit_through_fit_and_resume(tmp_path):
    # capacity 30 < 2 x 40 items: the reservoir replaces, so its insertion generator matters too
    uninterrupted = fit_stream(tmp_path / "a", max_epochs=2).buffer.state_dict()
    saved = torch.load(tmp_path / "a" / "last.ckpt", weights_only=True)["callbacks"]["RecollectionWriter"]["ranks"]
    assert len(saved) == 1
    assert_same_state(saved[0], uninterrupted)

    # resuming a finished run restores the buffer and leaves it as it was (no refill, no extra items)
    restored = fit_stream(tmp_path / "b", max_epochs=2, ckpt_path=str(tmp_path / "a" / "last.ckpt"))
    assert_same_state(restored.buffer.state_dict(), uninterrupted)

    # resuming after the first epoch continues the stream exactly where it stopped
    continued = fit_stream(tmp_path / "c", max_epochs=2, ckpt_path=str(tmp_path / "a" / "epoch=0.ckpt"))
    assert_same_state(continued.buffer.state_dict(), uninterrupted)


def test_a_checkpoint_of_another_buffer_shape_or_process_count_is_refused(tmp_path):
    fit_stream(tmp_path / "a", max_epochs=1)
    with pytest.raises(ValueError, match="capacity"):
        fit_stream(tmp_path / "b", max_epochs=1, ckpt_path=str(tmp_path / "a" / "last.ckpt"), capacity=31)
    writer = RecollectionWriter(RecollectionBuffer(6, 2, capacity=30))
    state = writer.state_dict()
    with pytest.raises(ValueError, match="2 processes but this run has 1"):
        writer.load_state_dict({"ranks": state["ranks"] * 2})
    with pytest.raises(ValueError, match="not a RecollectionWriter state"):
        writer.load_state_dict({"buffer": state})


def test_resuming_a_finished_run_without_a_buffer_fills_it_with_the_final_weights(tmp_path):
    data = TinyData()
    make_trainer(2, [ModelCheckpoint(dirpath=tmp_path, save_last=True)], enable_checkpointing=True).fit(TinyCoder(), datamodule=data)
    writer, logger = RecollectionWriter(RecollectionBuffer(6, 2, capacity=100)), RecordingLogger()
    model = TinyCoder()
    make_trainer(2, [writer], logger=logger).fit(model, datamodule=data, ckpt_path=str(tmp_path / "last.ckpt"))

    final = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in final.items())
    expected = sorted(zip(map(tuple, model.encode(data.train_set.images.float() / 255).tolist()), data.train_set.labels.tolist()))
    codes, labels = stored_codes(writer.buffer), writer.buffer.stored[1]
    assert sorted(zip(map(tuple, codes.tolist()), labels.tolist())) == expected  # every training example, once
    assert logger.records[-1] == {"buffer/bits_used": N_TRAIN * writer.buffer.item_bits, "buffer/items": N_TRAIN}


def test_bits_used_and_items_are_logged_exactly_each_epoch():
    writer, logger = RecollectionWriter(RecollectionBuffer(6, 2, capacity=50), when="stream"), RecordingLogger()
    make_trainer(2, [writer], logger=logger).fit(TinyCoder(), datamodule=TinyData())
    usage = [r for r in logger.records if "buffer/items" in r]
    item_bits = 6 + 8 + 8  # 6 binary codes in 6 bits (the stream is not padded per item), a uint8 label, a uint8 task id
    assert usage == [{"buffer/bits_used": 40 * item_bits, "buffer/items": 40}, {"buffer/bits_used": 50 * item_bits, "buffer/items": 50}]
    assert writer.buffer.stored[0].numel() == 50 * 6 // 8 + 1  # 300 bits of codes in 38 bytes


def test_under_a_total_constraint_the_generator_parameters_are_counted_too():
    class ReportingCoder(TinyCoder):
        def storage_report(self):
            return {"parameter_bits": 32 * sum(p.numel() for p in self.parameters())}

    writer, logger, model = RecollectionWriter(RecollectionBuffer(6, 2, capacity=50), when="stream"), RecordingLogger(), ReportingCoder()
    make_trainer(1, [writer], logger=logger).fit(model, datamodule=TinyData())
    last = [r for r in logger.records if "buffer/items" in r][-1]
    parameters = sum(p.numel() for p in model.parameters())
    assert parameters > 0
    assert last["buffer/bits_with_generator"] == last["buffer/bits_used"] + 32 * parameters


# -- DDP: rank r's buffer runs on seed + r ----------------------------------------------------------------
def rank_trainer(rank: int, world_size: int = 1) -> SimpleNamespace:
    """What setup reads of a trainer (the reseeding tests keep one process's budget: the split is tested below)."""
    return SimpleNamespace(global_rank=rank, world_size=world_size)


def test_each_process_keeps_its_share_of_the_runs_buffer_once():
    writer = RecollectionWriter(RecollectionBuffer(6, 2, capacity=10, seed=5), when="stream")
    writer.setup(rank_trainer(1, world_size=2), TinyCoder(), "fit")
    assert writer.buffer.capacity == 5
    writer.setup(rank_trainer(1, world_size=2), TinyCoder(), "test")  # a later stage keeps the share it has
    assert writer.buffer.capacity == 5


def test_each_rank_gets_seed_plus_rank_so_identical_buffers_draw_independently():
    """Every DDP process builds the same buffer (same config, same seed); setup reseeds rank r with seed + r."""
    writers = [RecollectionWriter(RecollectionBuffer(6, 2, capacity=10, seed=5), when="stream") for _ in range(3)]
    for rank, writer in enumerate(writers):
        writer.setup(rank_trainer(rank), TinyCoder(), "fit")
        fresh = RecollectionBuffer(6, 2, capacity=10, seed=5 + rank)
        assert writer.buffer.seed == 5 + rank and writer.seed == 5
        assert_same_state(writer.buffer.state_dict(), fresh.state_dict())  # both generators as if built with 5 + r
    codes = torch.randint(2, (200, 6), generator=torch.Generator().manual_seed(0))
    kept = []
    for writer in writers:  # the very same stream on every rank, to compare their draws
        writer.buffer.add(codes, torch.zeros(200, dtype=torch.long), 0)
        kept.append(writer.buffer.state_dict()["insert_rng"])
    assert not torch.equal(kept[0], kept[1]) and not torch.equal(kept[1], kept[2])
    assert len({tuple(w.buffer.sample(50).slots.tolist()) for w in writers}) == 3


def test_rank_zero_keeps_its_seed_and_a_later_setup_does_not_reseed():
    buffer = RecollectionBuffer(6, 2, capacity=10, seed=5)
    writer = RecollectionWriter(buffer, when="stream")
    buffer.add(torch.randint(2, (30, 6)), torch.zeros(30, dtype=torch.long), 0)
    buffer.sample(4)
    state = buffer.state_dict()
    writer.setup(rank_trainer(0), TinyCoder(), "fit")  # single process: nothing changes
    assert_same_state(buffer.state_dict(), state)
    other = RecollectionWriter(RecollectionBuffer(6, 2, capacity=10, seed=5))
    other.setup(rank_trainer(1), TinyCoder(), "fit")
    other.buffer.add(torch.randint(2, (30, 6)), torch.zeros(30, dtype=torch.long), 0)
    state = other.buffer.state_dict()
    other.setup(rank_trainer(1), TinyCoder(), "test")  # e.g. trainer.test after fit: the generators go on
    assert_same_state(other.buffer.state_dict(), state)


def test_mixed_and_lossless_buffers_are_reseeded_per_rank_too():
    mixed = RecollectionWriter(MixedBuffer(6, 2, (1, 28, 28), budget_bits=10 * 8 * 800, lossy_fraction=0.5, seed=2))
    mixed.setup(rank_trainer(3), TinyCoder(), "fit")
    assert (mixed.buffer.seed, mixed.buffer.lossy.seed, mixed.buffer.lossless.seed) == (5, 15, 16)
    lossless = RecollectionWriter(LosslessBuffer((1, 28, 28), capacity=4, seed=2))
    lossless.setup(rank_trainer(1), TinyCoder(), "fit")
    assert lossless.buffer.seed == 3


def fit_two_ranks(out: str) -> None:
    """Two gloo ranks (ddp_spawn) fill their buffers from a stream; run as a script of its own, in a child process.
    Tensors go to the workers through files: passing descriptors fails in some sandboxes ("bad value(s) in fds_to_keep")."""
    torch.multiprocessing.set_sharing_strategy("file_system")
    writer = RecollectionWriter(RecollectionBuffer(6, 2, capacity=8, seed=5), when="stream")
    checkpoints = ModelCheckpoint(dirpath=out, save_last=True)
    trainer = make_trainer(1, [writer, checkpoints], enable_checkpointing=True, strategy="ddp_spawn", devices=2)
    trainer.fit(TinyCoder(), datamodule=TinyData(n=64))


@pytest.mark.slow
def test_two_gloo_ranks_fill_their_buffers_with_seed_plus_rank(tmp_path):
    script = tmp_path / "fit_two_ranks.py"  # a file, not -c: spawned workers re-import the main module from its path
    script.write_text(f"import test_callbacks_recollection_writer as t\n\nif __name__ == '__main__':\n    t.fit_two_ranks({str(tmp_path)!r})\n")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)})
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = torch.load(tmp_path / "last.ckpt", weights_only=True)["callbacks"]["RecollectionWriter"]["ranks"]
    assert len(ranks) == 2
    for rank, state in enumerate(ranks):
        assert state["num_seen"] == 32  # its own half of the 64 examples
        # nothing was sampled: the sampling generator still is the fresh one of seed 5 + rank (stream 2 * (5 + r) + 1)
        assert torch.equal(state["sample_rng"], torch.Generator().manual_seed(2 * (5 + rank) + 1).get_state())
    assert not torch.equal(ranks[0]["insert_rng"], ranks[1]["insert_rng"])


# -- bad input ------------------------------------------------------------------------------------------
def test_bad_arguments_are_rejected_clearly():
    with pytest.raises(ValueError, match="when must be one of"):
        RecollectionWriter(RecollectionBuffer(6, 2, capacity=5), when="always")
    with pytest.raises(ValueError, match="ExperienceBuffer"):
        RecollectionWriter({"capacity": 5})
    no_encoder = L.LightningModule()
    with pytest.raises(ValueError, match="has no encode"):
        RecollectionWriter(RecollectionBuffer(6, 2, capacity=5)).setup(make_trainer(1, []), no_encoder, "fit")
    with pytest.raises(ValueError, match="exactly one RecollectionWriter"):
        find_writer(make_trainer(1, []))
