"""Writers of tiny datasets in the exact on-disk formats the real ones use, so loaders are tested offline.

Each writer fills a data root the way torchvision's download leaves it, with seeded random content, and returns
what it wrote (images as uint8 [N, C, H, W] numpy arrays, labels as int64) so tests can assert exact values.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# The real CIFAR-100 super-class of each fine class (fine_labels -> coarse_labels in the official pickles).
CIFAR100_COARSE_OF_FINE = np.array([
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
])  # fmt: skip


@dataclass
class Split:
    images: np.ndarray  # uint8 [N, C, H, W]
    labels: np.ndarray  # int64 [N]
    coarse: np.ndarray | None = None  # CIFAR-100 only


def _labelled(rng: np.random.Generator, per_class: int, num_classes: int, shape: tuple[int, ...]) -> Split:
    """``per_class`` examples of every class, in shuffled order, with random (so distinct) images."""
    labels = rng.permutation(np.repeat(np.arange(num_classes), per_class)).astype(np.int64)
    return Split(rng.integers(0, 256, size=(len(labels), *shape), dtype=np.uint8), labels)


# -- MNIST ----------------------------------------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed idx file of unsigned bytes: magic 0x0000 08 <ndim>, big-endian int32 dims, the data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, train_per_class: int = 4, test_per_class: int = 2, seed: int = 0, digits: range = range(10)) -> dict[str, Split]:
    """MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte; only ``digits`` occur (labels stay the digits)."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split, prefix, per_class in (("train", "train", train_per_class), ("test", "t10k", test_per_class)):
        data = _labelled(rng, per_class, len(digits), (1, 28, 28))
        data.labels = np.asarray(digits)[data.labels]
        write_idx(root / "MNIST" / "raw" / f"{prefix}-images-idx3-ubyte", data.images[:, 0])
        write_idx(root / "MNIST" / "raw" / f"{prefix}-labels-idx1-ubyte", data.labels)
        splits[split] = data
    return splits


# -- CIFAR ----------------------------------------------------------------------------------------------
def _write_pickle(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def _cifar_entry(data: Split, batch_label: str, label_keys: dict[str, np.ndarray]) -> dict:
    """One batch as the official pickles hold it: rows of 3072 bytes (R, G, B planes of 32x32), label lists."""
    return {
        "batch_label": batch_label,
        "data": data.images.reshape(len(data.images), 3 * 32 * 32),
        "filenames": [f"image_{i:05d}.png" for i in range(len(data.images))],
        **{key: labels.tolist() for key, labels in label_keys.items()},
    }


def write_cifar10(root: Path, per_batch: int = 4, test_size: int = 10, seed: int = 0) -> dict[str, Split]:
    """cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta; train = the 5 batches concatenated."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    batches = []
    for b in range(1, 6):
        batch = Split(rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, per_batch))
        _write_pickle(folder / f"data_batch_{b}", _cifar_entry(batch, f"training batch {b} of 5", {"labels": batch.labels}))
        batches.append(batch)
    test = _labelled(rng, test_size // 10, 10, (3, 32, 32))
    _write_pickle(folder / "test_batch", _cifar_entry(test, "testing batch 1 of 1", {"labels": test.labels}))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _write_pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072})
    train = Split(np.concatenate([b.images for b in batches]), np.concatenate([b.labels for b in batches]))
    return {"train": train, "test": test}


def write_cifar100(root: Path, train_per_class: int = 2, test_per_class: int = 1, seed: int = 0) -> dict[str, Split]:
    """cifar-100-python/{train, test, meta} with fine_labels and the real coarse_labels of each fine class."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    splits = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        data = _labelled(rng, per_class, 100, (3, 32, 32))
        data.coarse = CIFAR100_COARSE_OF_FINE[data.labels]
        _write_pickle(folder / split, _cifar_entry(data, f"{split}ing batch 1 of 1", {"fine_labels": data.labels, "coarse_labels": data.coarse}))
        splits[split] = data
    meta = {"fine_label_names": [f"fine_{i}" for i in range(100)], "coarse_label_names": [f"coarse_{i}" for i in range(20)]}
    _write_pickle(folder / "meta", meta)
    return splits


# -- Omniglot -------------------------------------------------------------------------------------------
def write_omniglot(
    root: Path,
    alphabets: dict[str, dict[str, int]],
    subdir: str = "omniglot-py",
    drawings: int = 20,
    size: int = 105,
) -> dict[str, list[int]]:
    """``<subdir>/<set>/<alphabet>/characterNN/<id>_<drawer>.png``: 1-bit PNGs, black strokes on white.

    ``alphabets`` maps a set folder (images_background / images_evaluation) to {alphabet: number of characters}.
    The drawing numbered k (1-based, over all files written) has ink on exactly its first k pixels in raster
    order, so the ink count names the file. Returns "<alphabet>/<character>" -> ink counts of its drawings.
    """
    written, k = {}, 0
    for set_name, members in alphabets.items():
        for alphabet, num_characters in members.items():
            for c in range(1, num_characters + 1):
                folder = root / subdir / set_name / alphabet / f"character{c:02d}"
                folder.mkdir(parents=True)
                counts = []
                for drawer in range(1, drawings + 1):
                    k += 1
                    white = np.ones(size * size, dtype=bool)
                    white[:k] = False
                    Image.fromarray(white.reshape(size, size)).save(folder / f"{k:04d}_{drawer:02d}.png")
                    counts.append(k)
                written[f"{alphabet}/character{c:02d}"] = counts
    return written
