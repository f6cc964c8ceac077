"""Shared fixtures: the real data root (CI points LOSSY_MEMORY_DATA_DIR at ../shared/datasets) and config composition."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from lossy_memory.runtime import CONFIG_DIR, register_resolvers

register_resolvers()


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The folder holding real MNIST (and the Omniglot subset); tests needing it skip when it is absent."""
    folder = Path(os.environ.get("LOSSY_MEMORY_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    if not (folder / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        message = f"real MNIST not found under {folder}; set LOSSY_MEMORY_DATA_DIR"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI must run the real-data tests)")
        pytest.skip(message)
    return folder


@pytest.fixture
def one_thread():
    """Tiny ops run fastest on one thread, and far faster than on several when the CPUs are shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config `python -m lossy_memory.train <overrides>` would run, writing into output_dir."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir.parent)
        del cfg.hydra
    return cfg


@contextmanager
def hydra_runtime(overrides: list[str]) -> Iterator[None]:
    """Hydra's runtime config set as `python -m lossy_memory.train <overrides>` sets it (what ``${hydra:...}``
    interpolations read, e.g. the data config chosen), cleared afterwards."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        HydraConfig.instance().set_config(compose(config_name="train", overrides=overrides, return_hydra_config=True))
    try:
        yield
    finally:
        HydraConfig.instance().cfg = None
