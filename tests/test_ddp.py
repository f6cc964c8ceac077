"""DDP on CPU (gloo, 2 processes) through the user's command, on a tiny MNIST written to tmp.

Lightning's subprocess launcher starts rank 1 by re-running the command line with ``hydra.run.dir`` set to
rank 0's run directory; these tests check that both ranks share that one directory, that each trained on its own
half of the data, and that the run's record, metrics and checkpoint come out as in a single-process run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from data_formats import write_mnist

TRAIN_PER_CLASS, TEST_PER_CLASS, BATCH_SIZE = 32, 8, 12  # N = 320 train images, 160 per rank, ceil(160/12) = 14 batches
TESTS_DIR = Path(__file__).resolve().parent


def image_digest(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image, dtype=np.uint8).tobytes()).hexdigest()


class ShardRecorder(L.Callback):
    """Added to the run under test (``+callbacks.shard_recorder``): every rank writes the digest of each training
    image it stepped on to ``shard_rank<r>.txt``, one batch a line, so the shards are checked from what was trained
    on rather than from the sampler's promise. The images are random, so a digest names one example."""

    def __init__(self, output_dir: str):
        self.output_dir, self.batches = Path(output_dir), []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, batch_idx: int) -> None:
        pixels = (batch["x"] * 255).round().to(torch.uint8).cpu().numpy()  # back to the bytes on disk
        self.batches.append(" ".join(image_digest(image[0]) for image in pixels))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        (self.output_dir / f"shard_rank{trainer.global_rank}.txt").write_text("\n".join(self.batches) + "\n")


@pytest.mark.parametrize("run_dir_given", [True, False], ids=["run_dir_given", "default_run_dir"])
def test_ddp_two_cpu_ranks_train_disjoint_shards_into_one_run_dir(tmp_path: Path, run_dir_given: bool) -> None:
    written = write_mnist(tmp_path / "data", train_per_class=TRAIN_PER_CLASS, test_per_class=TEST_PER_CLASS)
    num_train = len(written["train"].labels)
    args = [
        "+experiment=mnist_compression", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=1",
        f"data.data_dir={tmp_path / 'data'}", "data.download=false", f"data.batch_size={BATCH_SIZE}", "data.eval_batch_size=40",
        "model.latent.c=8", "+callbacks.shard_recorder._target_=test_ddp.ShardRecorder",
        "+callbacks.shard_recorder.output_dir=${paths.output_dir}",
    ]
    # The default run directory is named after rank 0's pid and a random stamp: rank 1 must reuse it, not make its own.
    args.append(f"hydra.run.dir={tmp_path / 'run'}" if run_dir_given else f"paths.log_dir={tmp_path / 'logs'}")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(TESTS_DIR)}
    result = subprocess.run([sys.executable, "-m", "lossy_memory.train", *args], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    if run_dir_given:
        run_dir = tmp_path / "run"
    else:
        run_dirs = list((tmp_path / "logs" / "runs").iterdir())
        assert len(run_dirs) == 1, f"the ranks wrote to more than one run directory: {run_dirs}"
        run_dir = run_dirs[0]

    per_rank_batches = math.ceil(num_train / 2 / BATCH_SIZE)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["world_size"] == 2
    assert record["train_batches_per_rank"] == per_rank_batches

    shards = []
    for rank in (0, 1):
        batches = (run_dir / f"shard_rank{rank}.txt").read_text().splitlines()
        assert len(batches) == per_rank_batches
        shards.append([digest for line in batches for digest in line.split()])
    assert [len(shard) for shard in shards] == [num_train // 2] * 2
    assert all(len(set(shard)) == len(shard) for shard in shards), "a rank saw an example twice in one epoch"
    assert not set(shards[0]) & set(shards[1]), "the ranks' shards overlap"
    assert set(shards[0]) | set(shards[1]) == {image_digest(image) for image in written["train"].images[:, 0]}

    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    test_distortion = [float(row["test/distortion"]) for row in rows if row.get("test/distortion")]
    assert len(test_distortion) == 1 and math.isfinite(test_distortion[0]) and 0 < test_distortion[0] < 1
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == per_rank_batches
