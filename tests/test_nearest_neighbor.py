"""Table 1's nearest-neighbour distances: the metric against brute force, the callback's values, the experiment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from conftest import compose_config
from lossy_memory.callbacks import NearestNeighborDistance, RecollectionWriter
from lossy_memory.memory import LosslessBuffer, RecollectionBuffer
from lossy_memory.metrics.nearest_neighbor import nearest_neighbor_distances
from test_callbacks_recollection_writer import C, L_VALUES, TinyData, make_trainer, make_vae


pytestmark = pytest.mark.usefixtures("one_thread")


def brute_force(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    return (queries.flatten(1)[:, None, :].double() - references.flatten(1)[None, :, :].double()).abs().mean(dim=2).amin(dim=1)


# -- the metric -----------------------------------------------------------------------------------------
def test_distances_on_a_hand_made_example():
    references = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5]]).view(3, 1, 2, 2)
    queries = torch.tensor([[0.1, 0.1, 0.1, 0.1],   # nearest: zeros, 0.1 per pixel
                            [1.0, 1.0, 0.0, 0.0],   # 0.5 from each of the three
                            [0.5, 0.5, 0.5, 0.5],   # one of the references: 0
                            [0.9, 0.6, 1.0, 1.0]]).view(4, 1, 2, 2)  # nearest: ones, (0.1 + 0.4) / 4
    assert torch.allclose(nearest_neighbor_distances(queries, references), torch.tensor([0.1, 0.5, 0.0, 0.125]))


@pytest.mark.parametrize(("query_chunk", "reference_chunk"), [(1, 1), (3, 7), (1024, 8192)])
def test_chunked_distances_equal_brute_force(query_chunk, reference_chunk):
    g = torch.Generator().manual_seed(0)
    queries = torch.rand(37, 1, 5, 5, generator=g)
    references = torch.randint(0, 256, (101, 1, 5, 5), dtype=torch.uint8, generator=g)
    expected = brute_force(queries, references.double() / 255)
    got = nearest_neighbor_distances(queries, references, query_chunk, reference_chunk)
    assert got.dtype == torch.float32 and got.shape == (37,)
    assert torch.allclose(got.double(), expected, atol=1e-6)
    assert torch.allclose(nearest_neighbor_distances(queries, references.float() / 255, query_chunk, reference_chunk), got, atol=1e-6)


def test_the_metric_rejects_bad_input():
    images = torch.rand(3, 1, 2, 2)
    with pytest.raises(ValueError, match="query_chunk"):
        nearest_neighbor_distances(images, images, query_chunk=0)
    with pytest.raises(ValueError, match="floating-point"):
        nearest_neighbor_distances((images * 255).to(torch.uint8), images)
    with pytest.raises(ValueError, match="one shape"):
        nearest_neighbor_distances(images, torch.rand(3, 1, 2, 3))
    with pytest.raises(ValueError, match="at least one"):
        nearest_neighbor_distances(images, images[:0])


# -- the callback ---------------------------------------------------------------------------------------
def test_the_callback_reports_the_distances_of_its_own_draws(tmp_path):
    torch.manual_seed(0)
    data, model = TinyData(n=24), make_vae()
    writer = RecollectionWriter(RecollectionBuffer(C, L_VALUES, capacity=100, seed=7), when="last_epoch")
    report = NearestNeighborDistance(tmp_path, num_samples=9, decode_batch_size=4, query_chunk=2, reference_chunk=5)
    trainer = make_trainer(1, [writer, report])
    trainer.fit(model, datamodule=data)
    before = writer.buffer.state_dict()
    trainer.test(model, datamodule=data)

    # the same draws, again, from the buffer as it was before the test: decoded, compared by brute force
    replica = RecollectionBuffer(C, L_VALUES, capacity=100)
    replica.load_state_dict(before)
    references = data.train_set.images.double() / 255
    with torch.no_grad():
        code = brute_force(model.decode(replica.sample_codes(9)), references).mean()
        stored = brute_force(model.decode(replica.sample(9).data), references).mean()
    saved = json.loads((tmp_path / "nearest_neighbor.json").read_text())
    assert saved["nn/code_sampling"] == pytest.approx(float(code), abs=1e-6)
    assert saved["nn/buffer_sampling"] == pytest.approx(float(stored), abs=1e-6)
    assert {k: saved[k] for k in ("num_samples", "buffer_items", "reference_items", "c", "l")} == {
        "num_samples": 9, "buffer_items": 24, "reference_items": 24, "c": C, "l": L_VALUES}
    assert trainer.callback_metrics["nn/buffer_sampling"].item() == pytest.approx(saved["nn/buffer_sampling"], abs=1e-6)


def test_the_callback_needs_a_filled_recollection_buffer(tmp_path):
    data, model = TinyData(n=8), make_vae()
    for buffer, message in ((RecollectionBuffer(C, L_VALUES, capacity=10), "empty"), (LosslessBuffer((1, 28, 28), capacity=10), "RecollectionBuffer")):
        trainer = make_trainer(1, [RecollectionWriter(buffer), NearestNeighborDistance(tmp_path, num_samples=2)])
        with pytest.raises(ValueError, match=message):
            trainer.test(model, datamodule=data)
    with pytest.raises(ValueError, match="num_samples"):
        NearestNeighborDistance(tmp_path, num_samples=0)


# -- the experiment -------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", [38, 168])
def test_the_experiment_composes_for_both_table_1_codes(c, tmp_path):
    cfg = compose_config(["+experiment=mnist_nearest_neighbor", f"model.latent.c={c}"], tmp_path / "run")
    assert cfg.task_name == "mnist_nearest_neighbor" and cfg.trainer.max_epochs == 10 and cfg.data.batch_size == 100
    writer, report = instantiate(cfg.callbacks.recollection_writer), instantiate(cfg.callbacks.nearest_neighbor)
    assert isinstance(writer.buffer, RecollectionBuffer) and writer.when == "last_epoch"
    assert (writer.buffer.c, writer.buffer.l, writer.buffer.capacity) == (c, 2, 60000)
    assert report.num_samples == 10000 and str(report.output_dir) == str(tmp_path / "run")
    assert {"model_checkpoint", "reconstruction_grid"} <= set(cfg.callbacks)  # the default callbacks stay


def run_train(args: list[str], cwd, data_dir) -> None:
    env = {"LOSSY_MEMORY_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin", "HOME": str(cwd), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "lossy_memory.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def trained_run(real_data_dir, tmp_path_factory):
    """A tiny Table 1 run on real MNIST: one epoch of 3 batches (its last, so the writer fills the buffer)."""
    run_dir = tmp_path_factory.mktemp("nn") / "run"
    args = ["+experiment=mnist_nearest_neighbor", "trainer=debug", "trainer.max_epochs=1", "trainer.max_steps=-1", "model.latent.c=38",
            "callbacks.nearest_neighbor.num_samples=64"]
    run_train([*args, f"hydra.run.dir={run_dir}"], run_dir.parent, real_data_dir)
    return run_dir, args


def test_end_to_end_on_real_mnist(trained_run):
    run_dir, _ = trained_run
    saved = json.loads((run_dir / "nearest_neighbor.json").read_text())
    assert saved["num_samples"] == 64 and saved["buffer_items"] == 300 and saved["reference_items"] == 60000
    assert 0 < saved["nn/buffer_sampling"] < 0.5 and 0 < saved["nn/code_sampling"] < 0.5
    buffer = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]["RecollectionWriter"]["ranks"][0]
    assert buffer["num_seen"] == 300 and buffer["rows"].shape == (300 * 38 // 8,)  # 300 items x 38 bits, one bitstream


def test_measuring_from_a_finished_checkpoint_reproduces_the_run(trained_run, real_data_dir, tmp_path):
    run_dir, args = trained_run
    resumed = tmp_path / "resumed"
    run_train([*args, f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={resumed}"], tmp_path, real_data_dir)
    original, again = (json.loads((d / "nearest_neighbor.json").read_text()) for d in (run_dir, resumed))
    assert again == original  # same weights, same buffer, same draws: no retraining


@pytest.mark.slow
def test_measuring_from_a_compression_checkpoint_fills_the_buffer_with_its_weights(real_data_dir, tmp_path):
    """The lead's path to Table 1: a finished mnist_compression run (no buffer in its checkpoint), measured as is."""
    compression = tmp_path / "compression"
    run_train(["+experiment=mnist_compression", "trainer=debug", "model.latent.c=38", f"hydra.run.dir={compression}"], tmp_path, real_data_dir)
    measured = tmp_path / "measured"
    run_train(["+experiment=mnist_nearest_neighbor", "trainer=debug", "model.latent.c=38", "callbacks.nearest_neighbor.num_samples=64",
               f"ckpt_path={compression / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={measured}"], tmp_path, real_data_dir)
    saved = json.loads((measured / "nearest_neighbor.json").read_text())
    assert saved["buffer_items"] == 300  # the 3 training batches of trainer=debug, encoded with the checkpoint's weights
    assert 0 < saved["nn/buffer_sampling"] < 0.5 and 0 < saved["nn/code_sampling"] < 0.5
    assert not (measured / "checkpoints").exists()  # nothing was trained


@pytest.mark.slow
def test_ddp_ranks_keep_and_restore_their_own_buffers(tmp_path):
    """Two CPU ranks: each fills its buffer from its own shard, the checkpoint holds both, a resume restores each."""
    from data_formats import write_mnist

    written = write_mnist(tmp_path / "data", train_per_class=16, test_per_class=4)  # 160 training images, 80 per rank
    args = ["+experiment=mnist_nearest_neighbor", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=1",
            f"data.data_dir={tmp_path / 'data'}", "data.download=false", "data.batch_size=20", "data.eval_batch_size=40", "model.latent.c=8",
            "callbacks.nearest_neighbor.num_samples=64", "callbacks.rich_progress_bar=null"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent)}
    for run, extra in (("run", []), ("resumed", [f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}"])):
        result = subprocess.run([sys.executable, "-m", "lossy_memory.train", *args, *extra, f"hydra.run.dir={tmp_path / run}"],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]

    ranks = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]["RecollectionWriter"]["ranks"]
    assert [state["num_seen"] for state in ranks] == [80, 80]
    assert [state["config"]["capacity"] for state in ranks] == [30000, 30000]  # the run's 60,000 codes, half per process
    assert sorted(torch.cat([state["labels"] for state in ranks]).tolist()) == sorted(written["train"].labels.tolist())
    original, again = (json.loads((tmp_path / run / "nearest_neighbor.json").read_text()) for run in ("run", "resumed"))
    assert original["buffer_items"] == 160 and original["num_samples"] == 64 and original["reference_items"] == 160
    assert again == original
