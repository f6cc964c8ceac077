"""The equal-bits comparison: a synthetic set, a lossless subset and recollections sized to the same bits, on real MNIST."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from lossy_memory.equal_bits import equal_bits
from lossy_memory.memory.synthetic import SyntheticSet, default_stats
from lossy_memory.runtime import CONFIG_DIR
from lossy_memory.train import train

from conftest import compose_config


@pytest.fixture(scope="module")
def generator_ckpt(real_data_dir, tmp_path_factory):
    """A c=8 generator whose buffer holds the codes of 300 training images (a few debug steps)."""
    root = tmp_path_factory.mktemp("equal_bits")
    train(compose_config(["+experiment=mnist_generator", "model.latent.c=8", "trainer=debug", "trainer.max_steps=-1",
                          "callbacks.publish_checkpoint.force=true"], root / "generator"))
    return root / "artifacts" / "mnist_generator_c8_l2.ckpt"


def config(real_data_dir, tmp_path, *overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("equal_bits", [f"paths.data_dir={real_data_dir}", "classifier=mlp", "classifier.hidden=[32]", "num_nets=2",
                                     "steps=20", "allow_shortened_checkpoints=true", *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        del cfg.hydra
    return cfg


def synthetic_file(tmp_path, shape=(1, 28, 28), per_class=2):
    labels = torch.arange(10).repeat_interleave(per_class)
    path = tmp_path / "synthetic_set.pt"
    SyntheticSet(torch.randn(len(labels), *shape), labels, *default_stats(shape[0])).save(path)
    return path


def test_every_memory_gets_the_synthetic_sets_bits(real_data_dir, tmp_path, generator_ckpt, one_thread):
    path = synthetic_file(tmp_path)
    report = equal_bits(config(real_data_dir, tmp_path, f"synthetic={path}", f"generator={generator_ckpt}"))
    budget = 20 * 784 * 8 + 20 * 4  # 20 images at 8 bits a pixel, 4-bit labels
    assert report["budget_bits"] == budget
    synthetic, lossless, recollections = report["rows"]
    assert (synthetic["items"], lossless["items"]) == (20, budget // (784 * 8 + 16))  # 19 uint8 images with label + task id
    assert lossless["bits"] <= budget and lossless["bits"] + 784 * 8 + 16 > budget
    assert recollections["items"] == 300  # the whole buffer: 125,520 bits would pay for 5,230 codes of 24 bits
    assert recollections["bits"] == 300 * (8 + 16)
    assert all(0 <= r["accuracy_mean"] <= 1 and r["networks"] == 2 for r in report["rows"])
    assert lossless["accuracy_mean"] > 0.15  # 19 real digits teach far more than chance (0.1)
    assert synthetic["epochs"] == 20 and lossless["epochs"] == 20  # one batch each: 20 epochs = 20 steps
    saved = json.loads((tmp_path / "run" / "equal_bits.json").read_text())
    assert saved["rows"] == report["rows"] and (tmp_path / "run" / "equal_bits.csv").is_file()


def test_a_synthetic_set_of_other_images_or_a_missing_input_is_refused(real_data_dir, tmp_path, generator_ckpt):
    path = synthetic_file(tmp_path, shape=(3, 32, 32))
    with pytest.raises(ValueError, match=r"holds images of shape \[3, 32, 32\] but the data has \[1, 28, 28\]"):
        equal_bits(config(real_data_dir, tmp_path, f"synthetic={path}", f"generator={generator_ckpt}"))
    with pytest.raises(ValueError, match="give synthetic="):
        equal_bits(config(real_data_dir, tmp_path, f"generator={generator_ckpt}"))
    with pytest.raises(FileNotFoundError, match="generator checkpoint"):
        equal_bits(config(real_data_dir, tmp_path, f"synthetic={synthetic_file(tmp_path)}", f"generator={tmp_path / 'none.ckpt'}"))
