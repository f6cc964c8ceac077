"""Distortion vs compression: the JPEG baseline, the sweep configs (which jobs `--multirun` makes) and the
report that gathers finished sweeps into compression.csv / compression.png."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra import initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image

from lossy_memory import compression_report
from lossy_memory.memory import jpeg
from lossy_memory.runtime import CONFIG_DIR, PROJECT_ROOT

MNIST_INPUT_BITS = 8 * 28 * 28
# The sweep's (c, l) points: groups of equal bits per item that compare l at the same storage, ~10x to ~630x.
CATEGORICAL_POINTS = {
    (627, 2), (314, 2), (157, 4), (168, 2), (84, 4), (56, 8), (42, 16), (78, 2), (39, 4), (26, 8),
    (38, 2), (19, 4), (13, 8), (10, 16), (8, 32), (20, 2), (10, 4), (5, 16), (10, 2), (5, 4),
}
CONTINUOUS_WIDTHS = {1, 2, 4, 8, 16, 32, 64}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# -- JPEG ----------------------------------------------------------------------------------------------
def synthetic_images(rgb: bool = False) -> np.ndarray:
    """Four 28x28 images with structure JPEG can and cannot compress: blank, gradient, stroke, noise."""
    rng = np.random.default_rng(0)
    blank = np.zeros((28, 28), np.uint8)
    gradient = np.tile(np.linspace(0, 255, 28, dtype=np.uint8), (28, 1))
    stroke = blank.copy()
    stroke[6:22, 12:16] = 255
    noise = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    images = np.stack([blank, gradient, stroke, noise])
    return np.stack([images, np.flip(images, 1), images.transpose(0, 2, 1)], axis=-1) if rgb else images


@pytest.fixture(scope="module")
def mnist_images(real_data_dir: Path) -> np.ndarray:
    from torchvision.datasets import MNIST

    return MNIST(str(real_data_dir), train=True, download=False).data[:64].numpy()


@pytest.mark.parametrize("rgb", [False, True])
def test_jpeg_header_is_the_fixed_framing(rgb: bool) -> None:
    images = synthetic_images(rgb)
    for quality in jpeg.QUALITIES:
        files = [jpeg.encode(image, quality) for image in images]
        # What an all-zero image also costs up to its scan: the same for every image of this size and quality.
        assert len({jpeg.header_bytes(data) for data in files}) == 1
        for data in files:
            assert 0 < jpeg.payload_bytes(data) < len(data) - jpeg.header_bytes(data)
            assert jpeg.decode(data).shape == images[0].shape


def test_jpeg_on_synthetic_images() -> None:
    points = jpeg.rate_distortion(synthetic_images())
    assert [p.quality for p in points] == list(jpeg.QUALITIES)
    bits = [p.bits_per_item for p in points]
    assert bits == sorted(bits) and bits[0] < bits[-1]
    assert points[-1].distortion < points[0].distortion / 10
    for p in points:
        assert p.compression_ratio == pytest.approx(MNIST_INPUT_BITS / p.bits_per_item)
    # A blank image's scan is a few bytes, far below its ~340-byte file.
    blank = jpeg.encode(synthetic_images()[0], 50)
    assert jpeg.payload_bytes(blank) < 20 < 300 < len(blank)


def test_jpeg_on_rgb_images() -> None:
    points = jpeg.rate_distortion(synthetic_images(rgb=True), qualities=(10, 90))
    assert points[0].bits_per_item < points[1].bits_per_item
    assert points[1].distortion < points[0].distortion
    assert points[0].compression_ratio == pytest.approx(3 * MNIST_INPUT_BITS / points[0].bits_per_item)


def test_jpeg_on_real_mnist(mnist_images: np.ndarray) -> None:
    points = jpeg.rate_distortion(mnist_images)
    bits = [p.bits_per_item for p in points]
    assert all(a < b for a, b in zip(bits, bits[1:])), bits
    distortions = [p.distortion for p in points]
    assert all(a > b for a, b in zip(distortions, distortions[1:])), distortions
    assert distortions[-1] < distortions[0] / 50
    # Header excluded: at low quality the scan is a small part of each file.
    file_bits = np.mean([8 * len(jpeg.encode(image, 1)) for image in mnist_images])
    assert bits[0] < 0.25 * file_bits


def test_jpeg_mnist_loader(real_data_dir: Path, tmp_path: Path) -> None:
    points = jpeg.mnist_rate_distortion(real_data_dir, items=8, qualities=(50,))
    assert len(points) == 1 and 0 < points[0].distortion < 0.1
    with pytest.raises(FileNotFoundError, match="LOSSY_MEMORY_DATA_DIR"):
        jpeg.mnist_rate_distortion(tmp_path, items=8)


def test_jpeg_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="uint8"):
        jpeg.encode(np.zeros((28, 28), np.float32), 50)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        jpeg.encode(np.zeros((28, 28, 2), np.uint8), 50)
    with pytest.raises(ValueError, match="quality"):
        jpeg.encode(np.zeros((28, 28), np.uint8), 0)
    with pytest.raises(ValueError, match="SOI"):
        jpeg.header_bytes(b"\x89PNG....")
    data = jpeg.encode(np.zeros((28, 28), np.uint8), 50)
    with pytest.raises(ValueError, match="EOI"):
        jpeg.payload_bytes(data[:-2])
    with pytest.raises(ValueError, match="no SOS"):
        jpeg.header_bytes(data[:jpeg.header_bytes(data) - 12])
    with pytest.raises(ValueError, match="non-empty"):
        jpeg.rate_distortion(np.zeros((0, 28, 28), np.uint8))


# -- sweep configs --------------------------------------------------------------------------------------
def compose_with_hydra(overrides: list[str], run_mode: RunMode = RunMode.RUN) -> DictConfig:
    """The config, Hydra's own node included, as `python -m lossy_memory.train` composes it in ``run_mode``."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return GlobalHydra.instance().hydra.compose_config("train", overrides, run_mode=run_mode)


def multirun_jobs(overrides: list[str]) -> list[DictConfig]:
    """The job configs `python -m lossy_memory.train <overrides> --multirun` runs: the sweeper's params and the
    command line expanded as Hydra's basic sweeper expands them, each job composed."""
    cfg = compose_with_hydra(overrides, RunMode.MULTIRUN)
    assert cfg.hydra.sweeper._target_.endswith("BasicSweeper")
    params = [f"{key}={value}" for key, value in (cfg.hydra.sweeper.params or {}).items()]
    parsed = OverridesParser.create().parse_overrides(params + overrides)
    (batch,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [compose_with_hydra(job, RunMode.MULTIRUN) for job in batch]


def test_categorical_sweep_composes_one_job_per_point() -> None:
    jobs = multirun_jobs(["+experiment=mnist_compression_sweep_categorical"])
    assert {(job.model.latent.c, job.model.latent.l) for job in jobs} == CATEGORICAL_POINTS
    assert len(jobs) == len(CATEGORICAL_POINTS)
    ratios = []
    for job in jobs:
        assert job.hydra.mode == RunMode.MULTIRUN
        assert job.model._target_ == "lossy_memory.models.DiscreteVAE"
        assert job.data.eval_on_train and job.optimized_metric == "train/distortion"
        assert job.task_name == "mnist_compression_categorical"
        latent = instantiate(job.model.latent)
        assert latent.bits_per_item == job.model.latent.c * math.ceil(math.log2(job.model.latent.l))
        ratios.append(MNIST_INPUT_BITS / latent.bits_per_item)
    assert min(ratios) == pytest.approx(10, rel=0.01) and max(ratios) > 600


def test_every_latent_preset_is_swept_and_named_after_its_point() -> None:
    presets = {path.stem: yaml.safe_load(path.read_text()) for path in (CONFIG_DIR / "model" / "latent").glob("*.yaml")}
    assert {f"c{p['c']}_l{p['l']}" for p in presets.values()} == set(presets)
    assert {(p["c"], p["l"]) for p in presets.values()} == CATEGORICAL_POINTS


def test_command_line_narrows_the_categorical_sweep() -> None:
    jobs = multirun_jobs(["+experiment=mnist_compression_sweep_categorical", "model/latent=c38_l2,c19_l4", "trainer=debug"])
    assert [(job.model.latent.c, job.model.latent.l) for job in jobs] == [(38, 2), (19, 4)]
    assert all(job.trainer.max_steps == 6 for job in jobs)


def test_single_point_forms_still_compose() -> None:
    cfg = compose_with_hydra(["+experiment=mnist_compression", "model.latent.c=38", "model.latent.l=2"])
    assert (cfg.model.latent.c, cfg.model.latent.l, cfg.task_name) == (38, 2, "mnist_compression")
    assert cfg.model._target_ == "lossy_memory.models.DiscreteVAE"
    cfg = compose_with_hydra(["+experiment=mnist_compression_continuous", "model.latent.h=8"])
    assert cfg.model._target_ == "lossy_memory.models.ContinuousVAE"
    assert (cfg.model.latent.h, cfg.data.eval_on_train, cfg.trainer.max_epochs) == (8, True, 10)


def test_continuous_sweep_composes_one_job_per_width() -> None:
    jobs = multirun_jobs(["+experiment=mnist_compression_sweep_continuous"])
    assert sorted(job.model.latent.h for job in jobs) == sorted(CONTINUOUS_WIDTHS)
    for job in jobs:
        assert job.model._target_ == "lossy_memory.models.ContinuousVAE"
        assert job.task_name == "mnist_compression_continuous" and job.data.eval_on_train


# -- the report ------------------------------------------------------------------------------------------
def fake_job(folder: Path, num: int, latent: dict, bits: float, train: float | None, test: float | None) -> Path:
    """A job folder as a finished (or, with a distortion None, unfinished) run leaves it."""
    job = folder / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / "csv").mkdir()
    (job / "config.yaml").write_text(yaml.safe_dump({"task_name": "fake", "model": {"latent": latent}}))
    storage = {"bits_per_item": bits, "compression_ratio": MNIST_INPUT_BITS / bits, "parameter_bits": 1000}
    (job / "run.json").write_text(json.dumps({"git": {"sha": "x", "dirty": False}, "storage": storage}))
    columns = ["epoch", "step", "storage/bits_per_item", "test/distortion", "train/distortion", "train/loss_step"]
    rows = [["", 0, bits, "", "", ""], [0, 0, "", "", "", 300.0], [0, 5, "", "", "", 250.0]]
    if test is not None:
        rows.append([1, 6, "", test, "", ""])
    if train is not None:
        rows.append([1, 6, "", "", train, ""])
    with (job / "csv" / "metrics.csv").open("w", newline="") as file:
        csv.writer(file).writerows([columns, *rows])
    return job


def categorical(c: int, l: int) -> dict:
    return {"_target_": "lossy_memory.nets.CategoricalLatent", "c": c, "l": l, "tau": 1.0}


def gaussian(h: int) -> dict:
    return {"_target_": "lossy_memory.nets.GaussianLatent", "h": h}


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_report_gathers_jobs_into_csv_png_and_markdown(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    discrete, continuous = tmp_path / "categorical", tmp_path / "continuous"
    fake_job(discrete, 0, categorical(38, 2), 38, train=0.08, test=0.085)
    fake_job(discrete, 1, categorical(168, 2), 168, train=0.03, test=0.031)
    fake_job(continuous, 0, gaussian(2), 64, train=0.12, test=0.121)
    (discrete / "multirun.yaml").write_text("hydra: {}\n")  # Hydra's own file beside the job folders
    out = tmp_path / "report"

    assert compression_report.main([str(discrete), str(continuous), "--out", str(out)]) == 0

    rows = read_rows(out / "compression.csv")
    assert list(rows[0]) == list(compression_report.COLUMNS)
    assert [(r["kind"], r["c"], r["l"], r["h"]) for r in rows] == [
        ("categorical", "168", "2", ""), ("categorical", "38", "2", ""), ("continuous", "", "", "2")]
    first = rows[0]
    assert float(first["bits_per_item"]) == 168 and float(first["compression_ratio"]) == pytest.approx(MNIST_INPUT_BITS / 168)
    assert float(first["distortion"]) == pytest.approx(0.03) and float(first["test_distortion"]) == pytest.approx(0.031)
    assert first["quality"] == "" and first["job"] == str(discrete / "1")
    assert float(rows[2]["distortion"]) == pytest.approx(0.12)

    png = out / "compression.png"
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(png) as image:
        image.verify()
    printed = capsys.readouterr().out
    assert printed.startswith("| kind | c | l | h | quality | bits_per_item | compression_ratio | distortion | test_distortion |")
    assert "| categorical | 38 | 2 |  |  | 38.0 | 165.1 | 0.0800 | 0.0850 |" in printed


def test_report_defaults_to_the_first_folder_and_adds_jpeg(tmp_path: Path, real_data_dir: Path) -> None:
    sweep = tmp_path / "sweep"
    fake_job(sweep, 0, categorical(38, 2), 38, train=0.08, test=0.085)
    args = [str(sweep), "--jpeg", "--jpeg-items", "16", "--data-dir", str(real_data_dir)]
    assert compression_report.main(args) == 0
    rows = read_rows(sweep / "compression.csv")
    assert [r["kind"] for r in rows] == ["categorical"] + ["jpeg"] * len(jpeg.QUALITIES)
    jpeg_rows = [r for r in rows if r["kind"] == "jpeg"]
    assert sorted(int(r["quality"]) for r in jpeg_rows) == list(jpeg.QUALITIES)
    assert all(r["test_distortion"] == "" and r["c"] == "" for r in jpeg_rows)
    assert (sweep / "compression.png").read_bytes().startswith(PNG_SIGNATURE)


def test_report_takes_a_single_run_folder_as_one_job(tmp_path: Path) -> None:
    run = fake_job(tmp_path / "runs", 0, gaussian(8), 256, train=0.05, test=0.06)
    (run / ".hydra" / "config.yaml").write_text("task_name: fake\n")
    assert compression_report.main([str(run), "--out", str(tmp_path / "report")]) == 0
    rows = read_rows(tmp_path / "report" / "compression.csv")
    assert [(r["kind"], r["h"], r["job"]) for r in rows] == [("continuous", "8", str(run))]


def report_error(args: list[str], capsys: pytest.CaptureFixture) -> str:
    assert compression_report.main(args) == 1
    return capsys.readouterr().err


def test_report_errors_name_the_folder_and_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert "no such folder" in report_error([str(tmp_path / "absent")], capsys)

    empty = tmp_path / "empty"
    empty.mkdir()
    assert f"{empty}: no job folders" in report_error([str(empty)], capsys)

    sweep = tmp_path / "sweep"
    fake_job(sweep, 0, categorical(38, 2), 38, train=0.08, test=0.085)
    no_test = fake_job(sweep, 1, categorical(19, 4), 38, train=0.07, test=None)
    no_csv = fake_job(sweep, 2, categorical(5, 4), 10, train=0.2, test=0.2)
    (no_csv / "csv" / "metrics.csv").unlink()
    message = report_error([str(sweep)], capsys)
    assert f"{no_test}: no test/distortion in csv/metrics.csv" in message
    assert f"{no_csv}: no csv/metrics.csv" in message
    assert "--skip-unfinished" in message and not (sweep / "compression.csv").exists()

    assert compression_report.main([str(sweep), "--skip-unfinished"]) == 0
    assert [(r["c"], r["l"]) for r in read_rows(sweep / "compression.csv")] == [("38", "2")]
    assert f"skipped {no_test}" in capsys.readouterr().err

    crashed = tmp_path / "crashed"
    fake_job(crashed, 0, gaussian(4), 128, train=None, test=None)
    (crashed / "0" / "run.json").unlink()
    message = report_error([str(crashed), "--skip-unfinished"], capsys)
    assert f"{crashed}: no finished jobs" in message and "no run.json" in message


def test_report_rejects_unknown_latents_and_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sweep = tmp_path / "sweep"
    fake_job(sweep, 0, {"_target_": "somewhere.VectorQuantizer", "k": 512}, 9, train=0.1, test=0.1)
    assert "model.latent._target_='somewhere.VectorQuantizer'" in report_error([str(sweep)], capsys)
    for args in ([], ["--jpeg"], ["--jpeg", "--out", str(tmp_path), "--jpeg-items", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            compression_report.main(args)
        assert exit_info.value.code == 2


@pytest.mark.slow
def test_real_multirun_then_report(tmp_path: Path, real_data_dir: Path) -> None:
    """Two points of the categorical sweep, trained a few batches each by `--multirun`, then reported."""
    env = {**os.environ, "LOSSY_MEMORY_DATA_DIR": str(real_data_dir)}
    command = [sys.executable, "-m", "lossy_memory.train", "+experiment=mnist_compression_sweep_categorical",
               "model/latent=c38_l2,c5_l4", "trainer=debug", "callbacks=none", f"paths.log_dir={tmp_path}"]
    subprocess.run(command, cwd=PROJECT_ROOT, env=env, check=True, capture_output=True, timeout=600)
    (sweep,) = (tmp_path / "multiruns").iterdir()
    assert compression_report.main([str(sweep)]) == 0
    rows = read_rows(sweep / "compression.csv")
    assert [(r["c"], r["l"], float(r["bits_per_item"])) for r in rows] == [("38", "2", 38.0), ("5", "4", 10.0)]
    assert all(0 < float(r["distortion"]) < 1 and 0 < float(r["test_distortion"]) < 1 for r in rows)
