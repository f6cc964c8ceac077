"""Distortion vs compression: the JPEG baseline, the sweep configs (which jobs `--multirun` makes) and a real sweep
reported (the report's own tests: test_report.py)."""

from __future__ import annotations

import csv
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

from lossy_memory.memory import jpeg
from lossy_memory.report.__main__ import main as report_main
from lossy_memory.runtime import CONFIG_DIR, PROJECT_ROOT

MNIST_INPUT_BITS = 8 * 28 * 28
# The sweep's (c, l) points: the paper's Table 6, 8x to 1045x.
CATEGORICAL_POINTS = {
    (6, 20), (10, 20), (6, 16), (12, 10), (10, 14), (24, 3), (38, 2), (6, 2), (40, 3), (20, 2), (8, 6), (12, 6), (30, 2), (24, 6),
    (4, 37), (8, 15), (48, 10), (209, 8), (12, 37), (313, 4), (392, 3), (50, 18), (168, 2), (108, 3), (62, 2), (208, 2), (68, 5),
}
CONTINUOUS_WIDTHS = {4, 8, 12, 20, 28, 80}  # the paper's Table 7 compressions (its h x 4: 128 bits per paper h)


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
    assert min(ratios) == pytest.approx(8.0) and max(ratios) == pytest.approx(6272 / 6)  # 392x3 and 6x2


def test_every_latent_preset_is_swept_and_named_after_its_point() -> None:
    presets = {path.stem: yaml.safe_load(path.read_text()) for path in (CONFIG_DIR / "model" / "latent").glob("*.yaml")}
    assert {f"c{p['c']}_l{p['l']}" for p in presets.values()} == set(presets)
    assert {(p["c"], p["l"]) for p in presets.values()} == CATEGORICAL_POINTS


def test_command_line_narrows_the_categorical_sweep() -> None:
    jobs = multirun_jobs(["+experiment=mnist_compression_sweep_categorical", "model/latent=c38_l2,c24_l3", "trainer=debug"])
    assert [(job.model.latent.c, job.model.latent.l) for job in jobs] == [(38, 2), (24, 3)]
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


@pytest.mark.slow
def test_real_multirun_then_report(tmp_path: Path, real_data_dir: Path) -> None:
    """Two points of the categorical sweep, trained a few batches each by `--multirun`, then reported."""
    env = {**os.environ, "LOSSY_MEMORY_DATA_DIR": str(real_data_dir)}
    command = [sys.executable, "-m", "lossy_memory.train", "+experiment=mnist_compression_sweep_categorical",
               "model/latent=c38_l2,c6_l2", "trainer=debug", "callbacks=none", f"paths.log_dir={tmp_path}"]
    subprocess.run(command, cwd=PROJECT_ROOT, env=env, check=True, capture_output=True, timeout=600)
    (sweep,) = (tmp_path / "multiruns").iterdir()
    assert report_main([str(sweep)]) == 0
    with (sweep / "compression.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(r["c"], r["l"], float(r["bits_per_item"])) for r in rows] == [("38", "2", 38.0), ("6", "2", 6.0)]
    assert all(0 < float(r["distortion"]) < 1 and 0 < float(r["test_distortion"]) < 1 for r in rows)
