"""Entry point: ``python -m lossy_memory.evaluate_synthetic path=<synthetic_set.pt> [classifier=<zoo net>] [num_nets=20]``.

Evaluates a saved synthetic set with the field's protocol (lossy_memory.memory.synthetic.evaluate_synthetic_set):
fresh networks trained on the set alone, tested on the data's test split; any network of conf/classifier can be the
evaluator (cross-architecture). With ``coreset=<random|herding|k_center|forgetting|average|kmeans>`` instead of ``path`` it
builds the baseline of ``images_per_class`` real images per class, saves it like a synthetic set, and evaluates it
the same way. Prints and writes ``evaluation.json`` in the run directory.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from lossy_memory.memory.coresets import class_average, embed_all, forgetting_scores, kmeans_centroids, knn_accuracy, select_coreset
from lossy_memory.memory.synthetic import (
    Normalizer,
    SyntheticSet,
    build_evaluation_net,
    default_stats,
    evaluate_synthetic_set,
    load_synthetic_set,
    normalized_split,
    train_on_synthetic,
)
from lossy_memory.runtime import CONFIG_DIR, quiet_known_noise, register_resolvers, user_errors_reported
from lossy_memory.writers import write_json

register_resolvers()
quiet_known_noise()


def coreset_set(cfg: DictConfig, datamodule, normalizer: Normalizer) -> SyntheticSet:
    """The ``cfg.coreset`` selection of ``cfg.images_per_class`` real training images per class, as a SyntheticSet."""
    images, labels = normalized_split(datamodule.train_set, normalizer)
    num_classes = datamodule.num_classes
    generator = torch.Generator().manual_seed(cfg.seed)
    stats = normalizer.stats()
    if cfg.coreset in ("average", "kmeans"):  # Wang et al.'s baselines: new images, not a subset
        if cfg.coreset == "average":
            if cfg.images_per_class != 1:
                raise ValueError(f"coreset=average makes one image per class; set images_per_class=1 (got {cfg.images_per_class})")
            made, made_labels = class_average(images, labels, num_classes)
        else:
            made, made_labels = kmeans_centroids(images, labels, cfg.images_per_class, num_classes, generator=generator)
        return SyntheticSet(made, made_labels, *stats, extras={"method": f"baseline_{cfg.coreset}", "images_per_class": cfg.images_per_class})
    features = scores = None
    if cfg.coreset in ("herding", "k_center"):
        if cfg.features == "pixels":
            features = images.flatten(1)
        elif cfg.features == "trained":
            torch.manual_seed(cfg.seed)
            net = build_evaluation_net(instantiate(cfg.classifier), images.shape[1:], num_classes)
            train_on_synthetic(net, images, labels, epochs=cfg.feature_epochs, lr=cfg.lr, batch_size=cfg.batch_size, generator=generator)
            features = embed_all(net.embed, images)
        else:
            raise ValueError(f"features must be 'pixels' or 'trained', got {cfg.features!r}")
    elif cfg.coreset == "forgetting":
        torch.manual_seed(cfg.seed)
        net = build_evaluation_net(instantiate(cfg.classifier), images.shape[1:], num_classes)
        scores = forgetting_scores(net, images, labels, epochs=max(2, cfg.feature_epochs), generator=generator)
    chosen = select_coreset(cfg.coreset, labels, cfg.images_per_class, num_classes, features=features, scores=scores, generator=generator)
    return SyntheticSet(images[chosen], labels[chosen], *stats, extras={"method": f"coreset_{cfg.coreset}", "images_per_class": cfg.images_per_class, "indices": chosen})


def evaluate(cfg: DictConfig) -> dict:
    if (cfg.path is None) == (cfg.coreset is None):
        raise ValueError("give exactly one of path=<synthetic_set.pt> (a saved set) or coreset=<random|herding|k_center|forgetting|average|kmeans>")
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    image_shape, num_classes = tuple(datamodule.train_set.image_shape), datamodule.num_classes
    output_dir = Path(cfg.paths.output_dir)
    if cfg.path is not None:
        synthetic = load_synthetic_set(cfg.path, image_shape, num_classes)
    else:
        synthetic = coreset_set(cfg, datamodule, Normalizer(*default_stats(image_shape[0])))
        synthetic.save(output_dir / "synthetic" / "synthetic_set.pt")
    normalizer = Normalizer(synthetic.mean, synthetic.std)
    test_images, test_labels = normalized_split(datamodule.test_set, normalizer)
    result = evaluate_synthetic_set(synthetic.images, synthetic.labels, test_images, test_labels, instantiate(cfg.classifier),
                                    num_classes, num_nets=cfg.num_nets, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                                    augment=cfg.augment, seed=cfg.seed, device=cfg.device, log=print)
    report = {"source": cfg.path or f"coreset={cfg.coreset} images_per_class={cfg.images_per_class} features={cfg.features}",
              "knn_accuracy": knn_accuracy(synthetic.images, synthetic.labels, test_images, test_labels),
              "classifier": cfg.classifier._target_, "images": len(synthetic.images), "augment": cfg.augment,
              **result}
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "evaluation.json", report)
    print(f"test accuracy {100 * result['mean']:.2f} +- {100 * result['std']:.2f} % over {result['count']} networks "
          f"({report['source']}, {report['classifier']})")
    return report


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate_synthetic")
@user_errors_reported
def main(cfg: DictConfig) -> float:
    return evaluate(cfg)["mean"]


if __name__ == "__main__":
    main()
