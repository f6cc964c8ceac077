"""Entry point: ``python -m lossy_memory.equal_bits synthetic=<synthetic_set.pt> generator=<generator ckpt>``.

Three memories of the same number of bits train the same network (the condensation issue's equal-bits table):

* the synthetic set, stored 8-bit quantised (and trained on as quantised); its bits are the budget B
  (``memory.synthetic.storage_bits``: pixels at 8 bits, labels, learned step sizes);
* a lossless random subset of the training set: as many uint8 images as B pays for (``budget.lossless_bits``:
  pixels, a label and a task id);
* recollections: as many codes of the generator's buffer as B pays for (its item bits: c*ceil(log2 l), label,
  task id), drawn without replacement and decoded once. The generator's parameters are not in B (the incremental
  constraint, as in the paper's Table 4); the table lists them.

Each memory trains ``num_nets`` fresh ``classifier`` networks with the evaluation protocol's optimiser (SGD momentum
0.9, weight decay 5e-4, lr x0.1 at half) for the same number of SGD steps (``steps``, batch ``batch_size``), so the
larger memories get no more compute than the synthetic set; test accuracy mean +- std. Prints a Markdown table and
writes ``equal_bits.json`` / ``equal_bits.csv`` to the run directory.
"""

from __future__ import annotations

import math
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from lossy_memory.checkpoints import load_trained_module, stored_buffer
from lossy_memory.memory import RecollectionBuffer, load_synthetic_set
from lossy_memory.memory.budget import lossless_bits
from lossy_memory.memory.episodic import stored_items
from lossy_memory.memory.synthetic import Normalizer, evaluate_synthetic_set, normalized_split, storage_bits
from lossy_memory.models.discrete_vae import DiscreteVAE
from lossy_memory.runtime import CONFIG_DIR, quiet_known_noise, register_resolvers, user_errors_reported
from lossy_memory.writers import markdown_table, write_csv, write_json

register_resolvers()
quiet_known_noise()


def affordable(budget_bits: int, item_bits: int, what: str) -> int:
    count = budget_bits // item_bits
    if count < 1:
        raise ValueError(f"the budget of {budget_bits} bits does not pay for one {what} ({item_bits} bits): use a larger synthetic set")
    return count


def equal_bits(cfg: DictConfig) -> dict:
    if cfg.synthetic is None or cfg.generator is None:
        raise ValueError("give synthetic=<synthetic_set.pt> (a condensation run's <run dir>/synthetic/synthetic_set.pt) and "
                         "generator=<DiscreteVAE checkpoint with its buffer> (e.g. outputs/artifacts/mnist_generator_c38_l2.ckpt)")
    if cfg.steps < 1 or cfg.num_nets < 1:
        raise ValueError(f"steps and num_nets must be >= 1, got {cfg.steps} and {cfg.num_nets}")
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    image_shape, num_classes = tuple(datamodule.train_set.image_shape), datamodule.num_classes
    synthetic = load_synthetic_set(cfg.synthetic, image_shape, num_classes)
    generator, run_config, checkpoint = load_trained_module(
        cfg.generator, DiscreteVAE, "generator", "python -m lossy_memory.train +experiment=mnist_generator model.latent.c=<c>",
        bool(cfg.get("allow_shortened_checkpoints")))
    if tuple(generator.image_shape) != image_shape:
        raise ValueError(f"the generator {cfg.generator} makes images of shape {list(generator.image_shape)} but the data has "
                         f"{list(image_shape)}: use a generator trained on this dataset")
    buffer = stored_buffer(checkpoint, run_config, cfg.generator)
    if not isinstance(buffer, RecollectionBuffer) or len(buffer) == 0:
        raise ValueError(f"the generator checkpoint {cfg.generator} holds no stored codes: train it with callbacks=recollection")
    budget = storage_bits(synthetic)
    rng = torch.Generator().manual_seed(int(cfg.seed))
    normalizer = Normalizer(synthetic.mean, synthetic.std)
    train_images, train_labels = normalized_split(datamodule.train_set, normalizer)

    lossless_item = lossless_bits(image_shape, num_classes, 1)
    n_lossless = min(affordable(budget, lossless_item, "lossless image"), len(train_labels))
    chosen = torch.randperm(len(train_labels), generator=rng)[:n_lossless]

    n_codes = min(affordable(budget, buffer.item_bits, "recollection"), len(buffer))
    codes, code_labels, _ = stored_items(buffer)
    picked = torch.randperm(len(buffer), generator=rng)[:n_codes]
    recollections = normalizer(buffer.decode(generator.decode, codes[picked]).cpu())

    memories = {
        "synthetic set (8-bit)": (normalizer((synthetic.pixels() * 255).round() / 255), synthetic.labels, budget),  # as stored
        "lossless random subset": (train_images[chosen], train_labels[chosen], n_lossless * lossless_item),
        f"recollections, c={buffer.c} l={buffer.l}": (recollections, code_labels[picked].long(), n_codes * buffer.item_bits),
    }
    datamodule.setup("test")
    test_images, test_labels = normalized_split(datamodule.test_set, normalizer)
    rows = []
    for name, (images, labels, bits) in memories.items():
        epochs = max(1, round(cfg.steps / math.ceil(len(images) / cfg.batch_size)))  # about `steps` SGD steps whatever the size
        result = evaluate_synthetic_set(images, labels, test_images, test_labels, instantiate(cfg.classifier), num_classes,
                                        num_nets=cfg.num_nets, epochs=epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                                        seed=cfg.seed, device=cfg.device)
        rows.append({"memory": name, "items": len(images), "bits": int(bits), "epochs": epochs,
                     "accuracy_mean": result["mean"], "accuracy_std": result["std"], "networks": result["count"]})
        print(f"{name}: {len(images)} items, {bits} bits, test accuracy {100 * result['mean']:.2f} +- {100 * result['std']:.2f} %", flush=True)
    report = {"budget_bits": budget, "synthetic": str(cfg.synthetic), "generator": str(cfg.generator),
              "generator_parameter_bits": generator.storage_report()["parameter_bits"], "classifier": cfg.classifier._target_,
              "steps": cfg.steps, "rows": rows}
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "equal_bits.json", report)
    header = ["memory", "items", "bits", "test accuracy (%)"]
    table = [{**r, "test accuracy (%)": f"{100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_std']:.2f} ({r['networks']} nets)"}
             for r in rows]
    write_csv(output_dir / "equal_bits.csv", [*header[:3], "epochs", "accuracy_mean", "accuracy_std", "networks"], rows)
    print(markdown_table(header, table))
    return report


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="equal_bits")
@user_errors_reported
def main(cfg: DictConfig) -> float:
    return equal_bits(cfg)["rows"][-1]["accuracy_mean"]


if __name__ == "__main__":
    main()
