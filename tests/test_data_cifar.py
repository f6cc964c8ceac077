"""CIFAR-10 / CIFAR-100 datamodules on tiny pickles in the official format (the real sets are not on disk)."""

from __future__ import annotations

import pickle
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from data_formats import CIFAR100_COARSE_OF_FINE, write_cifar10, write_cifar100
from hydra.utils import instantiate

from conftest import compose_config
from lossy_memory.data import CIFAR10DataModule, CIFAR100DataModule, DatasetCorruptError, DatasetUnavailableError


def test_cifar10_reads_all_five_batches_in_order_as_chw_uint8(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path)
    dm = CIFAR10DataModule(tmp_path, download=False, image_shape=[3, 32, 32])
    dm.setup()
    assert dm.image_shape == (3, 32, 32) and dm.train_set.images.dtype == torch.uint8
    for dataset, split in ((dm.train_set, "train"), (dm.test_set, "test")):
        assert torch.equal(dataset.images, torch.from_numpy(written[split].images))
        assert torch.equal(dataset.labels, torch.from_numpy(written[split].labels))
    assert (len(dm.train_set), len(dm.test_set)) == (20, 10)


@pytest.mark.parametrize("label_type, num_classes", [("fine", 100), ("coarse", 20)])
def test_cifar100_fine_and_coarse_labels(tmp_path: Path, label_type: str, num_classes: int) -> None:
    written = write_cifar100(tmp_path)
    dm = CIFAR100DataModule(tmp_path, download=False, image_shape=[3, 32, 32], label_type=label_type)
    dm.setup()
    assert dm.num_classes == num_classes
    for dataset, split in ((dm.train_set, "train"), (dm.test_set, "test")):
        expected = written[split].labels if label_type == "fine" else written[split].coarse
        assert torch.equal(dataset.labels, torch.from_numpy(expected))
        assert torch.equal(dataset.images, torch.from_numpy(written[split].images))
    assert torch.equal(dm.fine_to_coarse, torch.from_numpy(CIFAR100_COARSE_OF_FINE))


def test_cifar100_rejects_an_unknown_label_type(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="label_type must be 'fine' or 'coarse'"):
        CIFAR100DataModule(tmp_path, label_type="super")


@pytest.mark.parametrize(
    "module, folder, named_file",
    [(CIFAR10DataModule, "cifar-10-batches-py", "data_batch_1"), (CIFAR100DataModule, "cifar-100-python", "coarse_labels")],
)
def test_missing_files_name_dataset_folder_and_layout(tmp_path: Path, module: type, folder: str, named_file: str) -> None:
    with pytest.raises(DatasetUnavailableError) as error:
        module(tmp_path, download=False).setup()
    message = str(error.value)
    assert module.name in message and str(tmp_path / folder) in message and named_file in message


def test_a_missing_meta_file_counts_as_missing(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "batches.meta").unlink()
    with pytest.raises(DatasetUnavailableError, match="batches.meta"):
        CIFAR10DataModule(tmp_path, download=False).setup()


def test_failed_download_ends_in_unavailable_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No network: the error says the download failed and why, and no request is really made."""
    attempts = []

    def offline(url: str, *args, **kwargs) -> None:
        attempts.append(url)
        raise URLError("network is unreachable")

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", offline)
    with pytest.raises(DatasetUnavailableError) as error:
        CIFAR100DataModule(tmp_path, download=True).prepare_data()
    assert attempts == ["https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"]
    assert "Download was not possible: URLError" in str(error.value) and "cifar-100-python/train" in str(error.value)


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
@pytest.mark.parametrize("writer, module, file", [(write_cifar10, CIFAR10DataModule, "cifar-10-batches-py/data_batch_3"),
                                                  (write_cifar100, CIFAR100DataModule, "cifar-100-python/train")])
def test_damaged_pickle_is_corrupt(tmp_path: Path, writer, module: type, file: str, damage: str) -> None:
    writer(tmp_path)
    path = tmp_path / file
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2] if damage == "truncated" else b"\x80\x02garbage" + content[64:])
    with pytest.raises(DatasetCorruptError, match=f"{module.name} files in .* could not be read"):
        module(tmp_path, download=False).setup()


def test_coarse_labels_contradicting_fine_labels_are_corrupt(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    path = tmp_path / "cifar-100-python" / "train"
    entry = pickle.loads(path.read_bytes())
    i = entry["fine_labels"].index(7)
    entry["coarse_labels"][i] = (entry["coarse_labels"][i] + 1) % 20  # one example of fine class 7 in another super-class
    path.write_bytes(pickle.dumps(entry, protocol=2))
    with pytest.raises(DatasetCorruptError, match="coarse_labels disagree with fine_labels"):
        CIFAR100DataModule(tmp_path, download=False).setup()


@pytest.mark.parametrize("name, module, overrides", [("cifar10", CIFAR10DataModule, []), ("cifar100", CIFAR100DataModule, ["data.label_type=coarse", "data.num_classes=20"])])
def test_configs_instantiate_the_datamodules(tmp_path: Path, name: str, module: type, overrides: list[str]) -> None:
    write_cifar10(tmp_path)
    write_cifar100(tmp_path)
    cfg = compose_config([f"data={name}", f"paths.data_dir={tmp_path}", "data.download=false", *overrides], tmp_path / "run")
    dm = instantiate(cfg.data)
    dm.setup()
    assert type(dm) is module and dm.image_shape == (3, 32, 32)
    assert int(dm.train_set.labels.max()) < dm.num_classes == (10 if name == "cifar10" else 20)
    assert np.array_equal(np.unique(dm.test_set.labels.numpy()), np.arange(dm.num_classes))
