"""Dataset Distillation's baselines (lossy_memory.dd_baselines): the schedule's arrangement, the run, bad settings."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from lossy_memory.dd_baselines import by_step, run
from lossy_memory.runtime import CONFIG_DIR


def config(overrides: list[str], output_dir):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("dd_baselines", overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg.hydra
    return cfg


def test_by_step_gives_every_step_the_next_images_of_every_class():
    classes, steps, per_class = 3, 4, 2
    # image value = 100 * class + index within the class (class-major, as the baselines build them)
    values = torch.tensor([100 * c + i for c in range(classes) for i in range(steps * per_class)], dtype=torch.float)
    arranged = by_step(values.view(-1, 1, 1, 1), per_class, steps, classes).flatten(1)
    assert arranged.shape == (steps, classes * per_class)
    for s in range(steps):
        assert arranged[s].tolist() == [100 * c + s * per_class + k for c in range(classes) for k in range(per_class)]


def test_baselines_run_on_mnist_and_write_every_row(real_data_dir, tmp_path, one_thread):
    cfg = config([f"paths.data_dir={real_data_dir}", "classifier=mlp", "classifier.hidden=[32]", "steps=2", "epochs=2",
                  "tune_nets=2", "num_nets=3", "optimized_sets=5", "knn_draws=2", "kmeans_iterations=5", "lrs=[0.01,0.3]"], tmp_path)
    report = run(cfg)
    rows = report["baselines"]
    assert set(rows) == {"random real", "optimized real", "k-means", "average real", "k-NN with random real", "k-NN with k-means"}
    assert rows["optimized real"]["kept"] == 1 and rows["optimized real"]["sets"] == 5  # the top 20% of 5 sets
    for name in ("random real", "k-means", "average real"):
        assert rows[name]["lr"] in (0.01, 0.3) and rows[name]["count"] == 3
        assert rows[name]["lr"] == max(rows[name]["tuning"], key=rows[name]["tuning"].get)
    # 1-NN by 20 k-means centroids (2 per class) reads most digits; by 20 random real images, far fewer
    assert rows["k-NN with k-means"]["mean"] > 0.6 > rows["k-NN with random real"]["mean"] > 0.2
    assert json.loads((tmp_path / "baselines.json").read_text())["baselines"]["average real"]["count"] == 3


@pytest.mark.parametrize("override, message", [("optimized_keep=0", "optimized_keep"), ("lrs=[]", "lrs must be"),
                                               ("num_nets=0", "num_nets must be")])
def test_bad_settings_are_clear_errors_before_any_work(override, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        run(config([override, "paths.data_dir=/nonexistent"], tmp_path))
