"""MNISTDataModule on tiny idx files written here, and on the real MNIST when it is on disk."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from data_formats import write_mnist
from hydra.utils import instantiate

from conftest import compose_config
from lossy_memory.data import DatasetCorruptError, DatasetUnavailableError, MNISTDataModule


def test_tiny_mnist_loads_exact_images_and_labels(tmp_path: Path) -> None:
    written = write_mnist(tmp_path)
    dm = MNISTDataModule(tmp_path, download=False, image_shape=[1, 28, 28])
    dm.setup()
    for dataset, split in ((dm.train_set, "train"), (dm.test_set, "test")):
        assert dataset.images.dtype == torch.uint8 and dataset.images.shape == (len(written[split].labels), 1, 28, 28)
        assert torch.equal(dataset.images, torch.from_numpy(written[split].images))
        assert torch.equal(dataset.labels, torch.from_numpy(written[split].labels))
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"x", "y"} and batch["x"].dtype == torch.uint8
    x = dm.on_after_batch_transfer(batch, 0)["x"]
    assert x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_val_size_holds_out_a_seeded_disjoint_subset(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    runs = []
    for _ in range(2):
        dm = MNISTDataModule(tmp_path, download=False, val_size=8, seed=3)
        dm.setup()
        runs.append(dm)
    assert (len(runs[0].train_set), len(runs[0].val_set)) == (32, 8)
    assert torch.equal(runs[0].val_set.images, runs[1].val_set.images)
    everything = torch.cat([runs[0].train_set.images, runs[0].val_set.images]).flatten(1)
    assert len(torch.unique(everything, dim=0)) == 40


def test_image_shape_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    with pytest.raises(ValueError, match=r"set data.image_shape to \[1, 28, 28\]"):
        MNISTDataModule(tmp_path, download=False, image_shape=[3, 32, 32]).setup()


def _assert_unavailable_message(error: pytest.ExceptionInfo, folder: Path) -> None:
    message = str(error.value)
    assert "MNIST" in message and str(folder) in message and "train-images-idx3-ubyte" in message


def test_missing_files_without_download(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailableError) as error:
        MNISTDataModule(tmp_path, download=False).setup()
    _assert_unavailable_message(error, tmp_path / "MNIST" / "raw")
    assert "data.download=false" in str(error.value)


def test_missing_files_when_download_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No network: the download's own error is summarised inside the DatasetUnavailableError (no hang, no trace)."""
    attempts = []

    def offline(url: str, *args, **kwargs) -> None:
        attempts.append(url)
        raise URLError("network is unreachable")

    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", offline)
    with pytest.raises(DatasetUnavailableError) as error:
        MNISTDataModule(tmp_path, download=True).prepare_data()
    assert attempts, "the download was not attempted"
    _assert_unavailable_message(error, tmp_path / "MNIST" / "raw")
    assert "Download was not possible" in str(error.value)


@pytest.mark.parametrize("file", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
def test_truncated_idx_file_is_corrupt(tmp_path: Path, file: str) -> None:
    write_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / file
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DatasetCorruptError, match="MNIST files in .* could not be read"):
        MNISTDataModule(tmp_path, download=False).setup()


def test_config_instantiates_the_datamodule(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    cfg = compose_config(["data=mnist", f"paths.data_dir={tmp_path}", "data.download=false"], tmp_path / "run")
    dm = instantiate(cfg.data)
    dm.setup()
    assert isinstance(dm, MNISTDataModule) and dm.image_shape == (1, 28, 28) and len(dm.train_set) == 40


def test_real_mnist_has_the_official_split_sizes_and_label_counts(real_data_dir: Path) -> None:
    dm = MNISTDataModule(real_data_dir, download=False, image_shape=[1, 28, 28])
    dm.setup()
    assert (len(dm.train_set), len(dm.test_set)) == (60000, 10000)
    assert torch.bincount(dm.train_set.labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(dm.test_set.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize("existing", [True, False])
def test_a_failed_download_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool) -> None:
    """The folders torchvision makes and a partial archive are removed again; what the user had stays."""
    root = tmp_path / "datasets"
    if existing:
        (root / "theirs").mkdir(parents=True)

    def partial(url: str, download_root: str, *args, **kwargs) -> None:
        Path(download_root).mkdir(parents=True, exist_ok=True)
        (Path(download_root) / "train-images-idx3-ubyte.gz").write_bytes(b"half")
        raise URLError("network is unreachable")

    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", partial)
    with pytest.raises(DatasetUnavailableError):
        MNISTDataModule(root, download=True).prepare_data()
    assert sorted(p.name for p in tmp_path.rglob("*")) == (["datasets", "theirs"] if existing else [])
