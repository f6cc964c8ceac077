"""Loggers: W&B runs offline by itself when no key is configured, keeps its files in the run directory, receives the
reconstruction grids, and gives every multirun job its own run within one group; ``logger=many`` composes.

Nothing here may reach the network: W&B's server address points at a closed local port, so any attempt fails.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import wandb
from PIL import Image
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from wandb.proto import wandb_internal_pb2

from conftest import compose_config
from data_formats import write_mnist
from lossy_memory.runtime import wandb_offline
from lossy_memory.train import train

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens
TINY_RUN = ["+experiment=mnist_compression", "trainer=debug", "logger=wandb", "data.download=false", "model.latent.c=8"]


def wandb_records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    """The records of a ``run-<id>.wandb`` transaction log, the file ``wandb sync`` uploads: a 7-byte header
    (``:W&B``, magic, version), then LevelDB log framing in 32 KiB blocks, each chunk being crc32c, little-endian
    length, type (1 full, 2 first, 3 middle, 4 last) and the bytes of a serialized ``Record``."""
    data, block = path.read_bytes(), 32 * 1024
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    position, pending = 7, b""
    while position + 7 <= len(data):
        room = block - position % block
        length, kind = struct.unpack_from("<HB", data, position + 4) if room >= 7 else (0, 0)
        if kind == 0:  # the rest of the block is padding
            position += room
            continue
        pending = data[position + 7 : position + 7 + length] if kind in (1, 2) else pending + data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def offline_run(folder: Path) -> dict:
    """The single offline run under ``folder/wandb``: its directory, id, group, exit code and logged history keys."""
    runs = list((folder / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, f"expected one offline run under {folder}, found {runs}"
    (log,) = runs[0].glob("run-*.wandb")
    found = {"dir": runs[0], "history_keys": set()}
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            found.update(id=record.run.run_id, group=record.run.run_group, name=record.run.display_name)
        elif kind == "exit":
            found["exit_code"] = record.exit.exit_code
        elif kind == "history":
            found["history_keys"] |= {item.key or item.nested_key[0] for item in record.history.item}
        elif kind == "config":
            found.setdefault("config", {}).update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "summary":
            found.setdefault("summary", {}).update({item.key: json.loads(item.value_json) for item in record.summary.update})
    return found


@pytest.fixture
def no_wandb_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No key anywhere W&B looks (environment, ~/.netrc), no network, and W&B's process ended afterwards."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR"):
        monkeypatch.setenv(name, "")  # so the original state is restored: WandbLogger sets WANDB_MODE itself
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_BASE_URL", UNREACHABLE)
    monkeypatch.chdir(tmp_path)
    yield
    wandb.teardown()


def test_offline_unless_a_key_is_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_wandb_key: None) -> None:
    assert wandb_offline()
    monkeypatch.setenv("WANDB_MODE", "online")
    assert not wandb_offline()
    monkeypatch.delenv("WANDB_MODE")
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    assert not wandb_offline()
    (tmp_path / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    assert not wandb_offline()


def test_wandb_without_key_logs_offline_into_the_run_dir_with_image_grids(tmp_path: Path, no_wandb_key: None) -> None:
    write_mnist(tmp_path / "data")
    run_dir = tmp_path / "run"
    cfg = compose_config([*TINY_RUN, f"data.data_dir={tmp_path / 'data'}"], run_dir)
    assert cfg.logger.wandb.offline is True and cfg.logger.wandb.save_dir == str(run_dir)
    assert cfg.logger.wandb.group is None  # a single run belongs to no sweep group

    train(cfg)
    wandb.teardown()  # W&B's service writes the transaction log out when it stops, as it does at process exit

    run = offline_run(run_dir)
    assert run["exit_code"] == 0 and run["group"] == ""
    grids = sorted((run_dir / "images").glob("reconstructions_epoch*.png"))
    assert grids, "ReconstructionGrid saved no grid"
    assert len(list((run["dir"] / "files" / "media" / "images" / "val").glob("reconstructions_*.png"))) == len(grids)
    assert "val/reconstructions" in run["history_keys"] and "test/distortion" in run["history_keys"]
    config = run["config"]  # runs filter by any setting: c, l, seed, learning rate
    assert (config["model"]["latent"]["c"], config["model"]["latent"]["l"], config["seed"], config["model"]["optimizer"]["lr"]) == (
        cfg.model.latent.c, cfg.model.latent.l, cfg.seed, cfg.model.optimizer.lr)
    results = json.loads((run_dir / "results.json").read_text())["metrics"]
    assert run["summary"]["test/distortion"] == pytest.approx(results["test/distortion"])  # the final figure in the summary
    assert (run_dir / "csv" / "metrics.csv").is_file()  # logger=wandb keeps the CSV the reports read
    assert not (tmp_path / "wandb").exists(), "W&B wrote outside the run directory"


def test_a_continual_run_sends_what_its_memory_replays_of_each_task(tmp_path: Path, no_wandb_key: None) -> None:
    write_mnist(tmp_path / "data", train_per_class=20, test_per_class=5)
    run_dir = tmp_path / "run"
    cfg = compose_config(["+experiment=mnist_split_lifelong", "data.num_tasks=3", "data.batch_size=20", "logger=wandb",
                          "memory.lossless_equivalent=12", f"data.data_dir={tmp_path / 'data'}", "callbacks.recollection_grid.per_task=4"], run_dir)
    train(cfg)
    wandb.teardown()
    grids = sorted((run_dir / "images").glob("recollections_after_task*.png"))
    assert [g.name for g in grids] == [f"recollections_after_task{k}.png" for k in range(3)]
    with Image.open(grids[-1]) as image:  # three rows of items: taller than the first boundary's one
        last_height = image.size[1]
    with Image.open(grids[0]) as image:
        assert image.size[1] < last_height
    run = offline_run(run_dir)
    assert "cl/recollections" in run["history_keys"] and "cl/accuracy_matrix_heatmap" in run["history_keys"]
    assert len(list((run["dir"] / "files" / "media" / "images" / "cl").glob("recollections_*.png"))) == 3


def test_logger_many_composes_csv_tensorboard_and_offline_wandb(tmp_path: Path, no_wandb_key: None) -> None:
    cfg = compose_config(["+experiment=mnist_compression", "logger=many"], tmp_path / "run")
    loggers = {name: instantiate(cfg.logger[name]) for name in cfg.logger}
    assert {name: type(logger) for name, logger in loggers.items()} == {"csv": CSVLogger, "tensorboard": TensorBoardLogger, "wandb": WandbLogger}
    assert all(Path(logger.save_dir) == tmp_path / "run" for logger in loggers.values())
    assert cfg.logger.wandb.offline is True


def test_multirun_jobs_get_their_own_wandb_runs_in_one_group(tmp_path: Path) -> None:
    write_mnist(tmp_path / "data")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "WANDB_BASE_URL": UNREACHABLE}
    args = ["--multirun", *TINY_RUN, f"data.data_dir={tmp_path / 'data'}", "model.latent.c=8,16", f"paths.log_dir={tmp_path / 'logs'}"]
    result = subprocess.run([sys.executable, "-m", "lossy_memory.train", *args], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    (sweep,) = (tmp_path / "logs" / "multiruns").iterdir()
    runs = [offline_run(sweep / str(job)) for job in (0, 1)]
    assert runs[0]["id"] != runs[1]["id"]
    assert [run["group"] for run in runs] == [sweep.name] * 2
    assert [run["exit_code"] for run in runs] == [0, 0]
    assert all("test/distortion" in run["history_keys"] for run in runs)
    # what the sweep varied, as config the W&B UI groups by, and in each run's name; settings fixed for all jobs are not
    assert [run["config"]["swept"] for run in runs] == [{"model.latent.c": "8"}, {"model.latent.c": "16"}]
    assert [run["name"] for run in runs] == ["mnist_compression model.latent.c=8", "mnist_compression model.latent.c=16"]
    assert json.loads((sweep / "1" / "run.json").read_text())["swept"] == {"model.latent.c": "16"}
