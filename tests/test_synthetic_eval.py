"""Synthetic-set files, the evaluation protocol, the reference's augmentation, coreset baselines and the CLI."""

from __future__ import annotations

import functools

import pytest
import torch

from lossy_memory.memory.coresets import class_average, forgetting_scores, herding, k_center, kmeans_centroids, knn_accuracy, select_coreset
from lossy_memory.memory.synthetic import (
    Augmentation,
    SyntheticSet,
    build_evaluation_net,
    evaluate_synthetic_set,
    reference_eval_epochs,
    load_synthetic_set,
    storage_bits,
)
from lossy_memory.nets import MLP, LeNet5

TINY_MLP = functools.partial(MLP, hidden=[16])


def two_blobs(n: int, seed: int, shape=(1, 4, 4)):
    """Two classes that differ in mean brightness: any sensible classifier separates them."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(2).repeat(n // 2)
    images = torch.randn(n, *shape, generator=generator) * 0.3 + (labels.float() * 2 - 1).view(-1, 1, 1, 1)
    return images, labels


def test_save_and_load_round_trip_with_png(tmp_path):
    images, labels = two_blobs(6, 0, (1, 28, 28))
    synthetic = SyntheticSet(images, labels, (0.1307,), (0.3081,), learning_rates=torch.tensor([0.1, 0.2]), extras={"method": "x"})
    path, grid = synthetic.save(tmp_path / "syn" / "set.pt")
    assert grid.is_file() and grid.suffix == ".png" and grid.stat().st_size > 0
    loaded = load_synthetic_set(path, (1, 28, 28), 10)
    torch.testing.assert_close(loaded.images, images)
    assert loaded.labels.tolist() == labels.tolist() and loaded.extras == {"method": "x"}
    torch.testing.assert_close(loaded.learning_rates, torch.tensor([0.1, 0.2]))
    assert loaded.pixels().min() >= 0 and loaded.pixels().max() <= 1
    assert storage_bits(loaded) == 6 * 784 * 8 + 6 * 1 + 2 * 32


def test_a_synthetic_set_file_of_another_shape_is_a_clear_error(tmp_path):
    path, _ = SyntheticSet(*two_blobs(4, 0, (3, 32, 32)), (0.5,) * 3, (0.25,) * 3).save(tmp_path / "set.pt")
    with pytest.raises(ValueError, match=r"shape \[3, 32, 32\] but the data has \[1, 28, 28\].*dataset it was condensed from"):
        load_synthetic_set(path, (1, 28, 28), 10)
    with pytest.raises(ValueError, match="labels up to 1 but the data has 1 classes"):
        load_synthetic_set(path, (3, 32, 32), 1)
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a synthetic-set file"):
        load_synthetic_set(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="no synthetic set at"):
        load_synthetic_set(tmp_path / "missing.pt")


def test_an_evaluation_network_that_cannot_take_the_images_is_a_clear_error():
    with pytest.raises(ValueError, match=r"evaluation network cannot take the synthetic images \(shape \[1, 8, 8\]\).*LeNet5.*classifier=mlp"):
        build_evaluation_net(LeNet5, (1, 8, 8), 10)
    images, labels = two_blobs(4, 0, (1, 8, 8))
    with pytest.raises(ValueError, match="evaluation network cannot take"):
        evaluate_synthetic_set(images, labels, images, labels, LeNet5, 2, num_nets=1, epochs=1)
    with pytest.raises(ValueError, match="synthetic images have shape"):
        evaluate_synthetic_set(images, labels, torch.zeros(2, 1, 4, 4), labels[:2], TINY_MLP, 2, num_nets=1, epochs=1)


def test_protocol_trains_fresh_networks_and_reports_mean_and_std(one_thread):
    train_x, train_y = two_blobs(4, 0)
    test_x, test_y = two_blobs(200, 1)
    result = evaluate_synthetic_set(train_x, train_y, test_x, test_y, TINY_MLP, 2, num_nets=3, epochs=20, batch_size=256)
    assert result["count"] == 3 and len(result["accuracies"]) == 3
    assert result["mean"] > 0.9
    flipped = evaluate_synthetic_set(train_x, 1 - train_y, test_x, test_y, TINY_MLP, 2, num_nets=2, epochs=20)
    assert flipped["mean"] < 0.1  # it really learns from the synthetic labels


def test_evaluation_length_is_the_references_unless_given(one_thread):
    assert reference_eval_epochs(augment=True) == 1000 and reference_eval_epochs(augment=False) == 300  # main.py's rule
    train_x, train_y = two_blobs(4, 0)
    assert evaluate_synthetic_set(train_x, train_y, train_x, train_y, TINY_MLP, 2, num_nets=1, epochs=3)["epochs"] == 3


def test_augmentation_keeps_shapes_and_identity_when_its_ranges_are_zero():
    images = torch.rand(8, 1, 28, 28)
    still = Augmentation(crop=0, scale=0.0, rotate=0.0)
    torch.testing.assert_close(still(images, torch.Generator().manual_seed(0)), images, atol=1e-5, rtol=0)
    moved = Augmentation()(images, torch.Generator().manual_seed(0))
    assert moved.shape == images.shape and not torch.allclose(moved, images)
    rotated = Augmentation(strategies=("rotate",), rotate=90.0)(torch.ones(2, 1, 28, 28), torch.Generator().manual_seed(0))
    torch.testing.assert_close(rotated, torch.ones(2, 1, 28, 28))  # filled with the (constant) mean


def test_herding_and_k_center_choose_by_their_rules():
    features = torch.tensor([[0.0], [10.0], [4.0], [-10.0], [1.0]])  # mean 1.0
    assert herding(features, 1).tolist() == [4]  # the example nearest the mean
    assert herding(features, 2).tolist() == [4, 0]  # running means: (1 + 0) / 2 = 0.5 is nearest 1 (4 would give 2.5)
    assert k_center(features, 3).tolist() == [4, 3, 1]  # nearest the mean, then farthest-first


def test_select_coreset_is_grouped_by_class_and_checks_sizes():
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 2, 2])
    features = torch.arange(8.0).view(-1, 1)
    for method in ("random", "herding", "k_center"):
        chosen = select_coreset(method, labels, 2, 3, features=features, generator=torch.Generator().manual_seed(0))
        assert labels[chosen].tolist() == [0, 0, 1, 1, 2, 2]
    scores = torch.tensor([0.0, 1.0, 5.0, 0.0, 1.0, float("inf"), 0.0, 2.0])
    assert select_coreset("forgetting", labels, 1, 3, scores=scores).tolist() == [2, 5, 7]
    with pytest.raises(ValueError, match=r"images_per_class=3 is larger .*class 2: 2"):
        select_coreset("random", labels, 3, 3)
    with pytest.raises(ValueError, match="herding needs features"):
        select_coreset("herding", labels, 1, 3)


def test_wang_baselines_average_kmeans_and_nearest_neighbour():
    images = torch.tensor([[0.0], [2.0], [10.0], [12.0], [100.0], [104.0]]).view(6, 1, 1, 1)
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    means, mean_labels = class_average(images, labels, 2)
    assert means.flatten().tolist() == [6.0, 102.0] and mean_labels.tolist() == [0, 1]
    centroids, centroid_labels = kmeans_centroids(images, labels, 2, 2, generator=torch.Generator().manual_seed(0))
    assert sorted(centroids[:2].flatten().tolist()) == [1.0, 11.0] and centroid_labels.tolist() == [0, 0, 1, 1]
    queries = torch.tensor([5.0, 60.0, 90.0]).view(3, 1, 1, 1)
    assert knn_accuracy(means, mean_labels, queries, torch.tensor([0, 1, 1])) == 1.0
    assert knn_accuracy(means, mean_labels, queries, torch.tensor([1, 1, 1])) == pytest.approx(2 / 3)


class Scripted(torch.nn.Module):
    """Right or wrong on each example as a table says, presentation after presentation (image i holds the value i)."""

    def __init__(self, right: list[list[int]]):
        super().__init__()
        self.right, self.calls = torch.tensor(right, dtype=torch.bool), 0
        self.weight = torch.nn.Parameter(torch.zeros(()))  # something for the optimizer to step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        correct = self.right[x.flatten(1)[:, 0].long(), self.calls]
        self.calls += 1
        return torch.stack([correct.float(), (~correct).float()], dim=1) + 0 * self.weight


def test_forgetting_scores_count_correct_to_wrong_transitions():
    right = [[1, 0, 1, 0],  # forgotten twice
             [1, 1, 1, 0],  # once, at the end
             [0, 1, 1, 1],  # learnt, never forgotten
             [0, 0, 0, 0],  # never learnt: most forgettable
             [1, 1, 1, 1]]  # never forgotten
    images, labels = torch.arange(5.0).view(5, 1, 1, 1), torch.zeros(5, dtype=torch.long)  # label 0: "right" predicts it
    scores = forgetting_scores(Scripted(right), images, labels, epochs=4, batch_size=5)
    assert scores.tolist() == [2.0, 1.0, 0.0, float("inf"), 0.0]


def test_evaluate_synthetic_command_scores_a_coreset_and_a_saved_file(real_data_dir, tmp_path, one_thread):
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from lossy_memory.evaluate_synthetic import evaluate
    from lossy_memory.runtime import CONFIG_DIR

    def config(overrides):
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("evaluate_synthetic", [f"paths.data_dir={real_data_dir}", "classifier=mlp", "classifier.hidden=[32]",
                                                 "num_nets=2", "epochs=10", *overrides], return_hydra_config=True)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "eval")
            del cfg.hydra
        return cfg

    report = evaluate(config(["coreset=herding", "images_per_class=2"]))
    assert report["count"] == 2 and 0.2 < report["mean"] <= 1  # 20 herded digits beat chance by far
    saved = tmp_path / "eval" / "synthetic" / "synthetic_set.pt"
    again = evaluate(config([f"path={saved}"]))
    assert again["images"] == 20 and 0 < again["knn_accuracy"] <= 1
    assert evaluate(config(["coreset=average", "num_nets=1", "epochs=2"]))["images"] == 10
    with pytest.raises(ValueError, match="exactly one of path"):
        evaluate(config([]))
