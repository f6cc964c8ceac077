"""Entry point: ``python -m lossy_memory.dd_baselines``: Dataset Distillation's baselines (Wang et al. 2018, section 5.1).

Each baseline trains fresh networks on real images with the distilled set's schedule: ``steps`` gradient steps of
``images_per_class_per_step`` images per class, replayed ``epochs`` times (MNIST: 10 x 3 = 30 steps on 10 images each),
from the theta_0 distribution the distiller's random initialisation draws from, through the same unrolled SGD
(``models.unrolled_distiller.unroll_steps``), with one fixed step size:

* random real: a fresh random set of real images (``images_per_class_per_step`` per class per step) for every network;
* optimized real: ``optimized_sets`` random sets, each scored on ``tune_nets`` networks; the best ``optimized_keep``
  of them (Wang et al.: the top 20%) are evaluated on fresh networks;
* k-means: per class, the centroids of ``steps x images_per_class_per_step`` clusters of its training images;
* average real: each class's mean image, the same at every step;
* k-NN: 1-nearest-neighbour classification (pixel space) by random real images (``knn_draws`` draws) and by the k-means
  centroids (as many k-means runs).

The step size of each trained baseline is chosen from ``lrs`` by mean test accuracy on ``tune_nets`` networks: the
baseline's best case, as the paper tunes it. The reported figures then come from ``num_nets`` other networks (the
paper: 200). Prints a table and writes ``baselines.json`` in the run directory.
"""

from __future__ import annotations

import math
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.func import functional_call

from lossy_memory.memory.coresets import class_average, kmeans_centroids, knn_accuracy, random_real
from lossy_memory.memory.synthetic import Normalizer, build_evaluation_net, default_stats, normalized_split, summarize
from lossy_memory.models.unrolled_distiller import initial_params, unroll_steps
from lossy_memory.runtime import CONFIG_DIR, quiet_known_noise, register_resolvers, user_errors_reported
from lossy_memory.writers import write_json

register_resolvers()
quiet_known_noise()


class Schedule:
    """The distilled set's schedule on ``net``: fresh theta_0 draws, the unrolled SGD steps, test accuracy."""

    def __init__(self, net: torch.nn.Module, steps: int, epochs: int, weight_init: str, test_images: torch.Tensor,
                 test_labels: torch.Tensor, batch_size: int = 2000):
        self.net, self.steps, self.epochs, self.weight_init = net.requires_grad_(False), steps, epochs, weight_init
        self.test_images, self.test_labels, self.batch_size = test_images, test_labels, batch_size

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor, lr: float) -> float:
        """Test accuracy of one fresh network after the schedule's steps on ``images`` [steps or 1, per step, C, H, W]
        (every step's rows labelled ``labels``) at step size ``lr``."""
        lrs = torch.full((self.steps * self.epochs,), float(lr))
        params = unroll_steps(self.net, initial_params(self.net, self.weight_init), images, labels, lrs, create_graph=False)
        correct = 0
        with torch.no_grad():
            for start in range(0, len(self.test_labels), self.batch_size):
                logits = functional_call(self.net, params, (self.test_images[start : start + self.batch_size],))
                correct += int((logits.argmax(1) == self.test_labels[start : start + self.batch_size]).sum())
        return correct / len(self.test_labels)


def by_step(images: torch.Tensor, per_class: int, steps: int, num_classes: int) -> torch.Tensor:
    """Images grouped by class ([num_classes * steps * per_class, ...], class-major) as the schedule's steps
    [steps, num_classes * per_class, ...]: step s holds the s-th ``per_class`` images of every class, classes in order."""
    grouped = images.view(num_classes, steps, per_class, *images.shape[1:])
    return grouped.transpose(0, 1).reshape(steps, num_classes * per_class, *images.shape[1:])


def check_settings(cfg: DictConfig) -> None:
    for name in ("images_per_class_per_step", "steps", "epochs", "tune_nets", "num_nets", "optimized_sets", "knn_draws"):
        value = cfg[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not cfg.lrs or any(not (isinstance(lr, (int, float)) and lr > 0) for lr in cfg.lrs):
        raise ValueError(f"lrs must be a non-empty list of step sizes > 0, got {list(cfg.lrs) if cfg.lrs else cfg.lrs}")
    if not 0 < cfg.optimized_keep <= 1:
        raise ValueError(f"optimized_keep (the fraction of random sets kept) must lie in (0, 1], got {cfg.optimized_keep}")


def run(cfg: DictConfig) -> dict:
    check_settings(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    image_shape, num_classes = tuple(datamodule.train_set.image_shape), datamodule.num_classes
    normalizer = Normalizer(*default_stats(image_shape[0]))
    images, labels = normalized_split(datamodule.train_set, normalizer)
    test_images, test_labels = normalized_split(datamodule.test_set, normalizer)
    per_class, steps = int(cfg.images_per_class_per_step), int(cfg.steps)
    net = build_evaluation_net(instantiate(cfg.classifier), image_shape, num_classes)
    schedule = Schedule(net, steps, int(cfg.epochs), cfg.weight_init, test_images, test_labels)
    step_labels = torch.arange(num_classes).repeat_interleave(per_class)
    generator = torch.Generator().manual_seed(int(cfg.seed))
    torch.manual_seed(int(cfg.seed))  # theta_0 draws
    class_pools = [torch.nonzero(labels == c).flatten() for c in range(num_classes)]

    def random_set() -> torch.Tensor:
        chosen = torch.cat([pool[random_real(len(pool), generator)[: steps * per_class]] for pool in class_pools])
        return by_step(images[chosen], per_class, steps, num_classes)

    def kmeans_set() -> torch.Tensor:
        centroids, _ = kmeans_centroids(images, labels, steps * per_class, num_classes, iterations=int(cfg.kmeans_iterations),
                                        generator=generator)
        return by_step(centroids, per_class, steps, num_classes)

    average = class_average(images, labels, num_classes)[0].repeat_interleave(per_class, 0).unsqueeze(0)

    def scores(make_set, lr: float, nets: int) -> list[float]:
        return [schedule.accuracy(make_set(), step_labels, lr) for _ in range(nets)]

    def tuned(name: str, make_set) -> tuple[float, dict[float, float]]:
        by_lr = {float(lr): summarize(scores(make_set, lr, int(cfg.tune_nets)))["mean"] for lr in cfg.lrs}
        best = max(by_lr, key=by_lr.get)
        print(f"  {name}: step size {best:g} (mean test accuracy by step size: "
              + ", ".join(f"{lr:g} {100 * a:.1f}" for lr, a in by_lr.items()) + ")", flush=True)
        return best, by_lr

    results: dict[str, dict] = {}
    kmeans = kmeans_set()
    for name, make_set in (("random real", random_set), ("k-means", lambda: kmeans), ("average real", lambda: average)):
        lr, by_lr = tuned(name, make_set)
        results[name] = {**summarize(scores(make_set, lr, int(cfg.num_nets))), "lr": lr, "tuning": by_lr}
    lr = results["random real"]["lr"]
    candidates = [random_set() for _ in range(int(cfg.optimized_sets))]
    ranked = sorted(candidates, key=lambda s: -summarize(scores(lambda: s, lr, int(cfg.tune_nets)))["mean"])
    kept = ranked[: max(1, math.ceil(cfg.optimized_keep * len(ranked)))]
    nets_each = max(1, int(cfg.num_nets) // len(kept))
    results["optimized real"] = {**summarize([a for s in kept for a in scores(lambda: s, lr, nets_each)]), "lr": lr,
                                 "sets": len(candidates), "kept": len(kept)}
    flat_labels = step_labels.repeat(steps)
    knn_random = [knn_accuracy(random_set().flatten(0, 1), flat_labels, test_images, test_labels) for _ in range(int(cfg.knn_draws))]
    knn_kmeans = [knn_accuracy(kmeans_set().flatten(0, 1), flat_labels, test_images, test_labels) for _ in range(int(cfg.knn_draws))]
    results["k-NN with random real"] = summarize(knn_random)
    results["k-NN with k-means"] = summarize(knn_kmeans)

    print(f"Dataset Distillation baselines, {type(net).__name__}, {steps} steps x {cfg.epochs} epochs of {per_class} image(s) "
          f"per class, {cfg.num_nets} networks (test accuracy %, mean +- std):")
    for name, result in results.items():
        print(f"  {name:<24} {100 * result['mean']:6.2f} +- {100 * result['std']:5.2f}"
              + (f"   step size {result['lr']:g}" if "lr" in result else ""))
    report = {"classifier": cfg.classifier._target_, "steps": steps, "epochs": int(cfg.epochs), "images_per_class_per_step": per_class,
              "weight_init": cfg.weight_init, "num_nets": int(cfg.num_nets), "tune_nets": int(cfg.tune_nets), "seed": int(cfg.seed),
              "baselines": results}
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "baselines.json", report)
    return report


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="dd_baselines")
@user_errors_reported
def main(cfg: DictConfig) -> float:
    return run(cfg)["baselines"]["random real"]["mean"]


if __name__ == "__main__":
    main()
