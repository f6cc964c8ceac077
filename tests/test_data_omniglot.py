"""OmniglotDataModule on tiny folders in the official layout, and on the real 8-alphabet subset."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from data_formats import write_omniglot
from hydra.utils import instantiate
from PIL import Image

from conftest import compose_config
from lossy_memory.data import DatasetCorruptError, DatasetUnavailableError, OmniglotDataModule
from lossy_memory.data.omniglot import OMNIGLOT_SETS

# Alphabet names chosen so that sorting across both set folders interleaves them: Avesta < Bengali < Latin.
ALPHABETS = {"images_background": {"Bengali": 2, "Latin": 1}, "images_evaluation": {"Avesta": 2}}
CHARACTERS = ["Avesta/character01", "Avesta/character02", "Bengali/character01", "Bengali/character02", "Latin/character01"]


@pytest.fixture
def omniglot_root(tmp_path: Path) -> tuple[Path, dict[str, list[int]]]:
    return tmp_path, write_omniglot(tmp_path, ALPHABETS)


def _full_size(root: Path, **kwargs) -> OmniglotDataModule:
    dm = OmniglotDataModule(root, download=False, image_shape=[1, 105, 105], **kwargs)
    dm.setup()
    return dm


def test_classes_are_characters_over_sorted_alphabets(omniglot_root) -> None:
    root, _ = omniglot_root
    dm = _full_size(root)
    assert dm.alphabet_names == ["Avesta", "Bengali", "Latin"]
    assert dm.character_names == CHARACTERS and dm.num_classes == 5
    assert dm.alphabet_of_class.tolist() == [0, 0, 1, 1, 2]
    assert dm.alphabet_of(torch.tensor([4, 0, 3])).tolist() == [2, 0, 1]


def test_each_character_splits_18_2_and_every_drawing_lands_once(omniglot_root) -> None:
    root, written = omniglot_root
    dm = _full_size(root)
    assert torch.bincount(dm.train_set.labels).tolist() == [18] * 5
    assert torch.bincount(dm.test_set.labels).tolist() == [2] * 5
    for split in (dm.train_set, dm.test_set):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (1, 105, 105)
        assert set(split.images.unique().tolist()) == {0, 255}  # inverted: white paper 0, ink 255
    # the ink count names the drawing: each character's 20 drawings appear once over train + test
    for label, character in enumerate(CHARACTERS):
        ink = [int(d.sum()) // 255 for s in (dm.train_set, dm.test_set) for d in s.images[s.labels == label]]
        assert sorted(ink) == written[character]


def test_split_is_seeded_and_independent_of_the_experiment_seed(omniglot_root) -> None:
    root, _ = omniglot_root
    a, b = _full_size(root, seed=1), _full_size(root, seed=2)
    assert torch.equal(a.test_set.images, b.test_set.images)
    c = _full_size(root, split_seed=1)
    assert not torch.equal(a.test_set.images, c.test_set.images)
    assert torch.equal(a.test_set.labels, c.test_set.labels)


def test_invert_false_keeps_black_ink_on_white(omniglot_root) -> None:
    root, _ = omniglot_root
    inverted, plain = _full_size(root), _full_size(root, invert=False)
    assert torch.equal(plain.train_set.images, 255 - inverted.train_set.images)
    assert (plain.train_set.images.flatten(1)[:, -1] == 255).all()  # the last pixel is never inked: white paper


def test_resize_to_28_is_antialiased_once_at_load(omniglot_root) -> None:
    root, _ = omniglot_root
    full = _full_size(root)
    small = OmniglotDataModule(root, download=False)  # default image_shape [1, 28, 28]
    small.setup()
    assert small.image_shape == (1, 28, 28) and small.train_set.images.dtype == torch.uint8
    assert torch.equal(small.train_set.labels, full.train_set.labels)
    # the ink is a 1-pixel-high strip: point sampling would drop most of it, antialiasing keeps its mass
    mass_full = full.train_set.images.flatten(1).float().mean(1)
    mass_small = small.train_set.images.flatten(1).float().mean(1)
    assert torch.allclose(mass_small, mass_full, atol=1.0)
    values = small.train_set.images.unique()
    assert ((values > 0) & (values < 255)).any()


def test_partial_copy_loads_with_sets_null_but_not_when_both_sets_are_required(tmp_path: Path) -> None:
    write_omniglot(tmp_path, {"images_background": {"Greek": 2}}, subdir="omniglot-small")
    dm = OmniglotDataModule(tmp_path, download=False, root_subdir="omniglot-small")
    dm.setup()
    assert dm.alphabet_names == ["Greek"] and (len(dm.train_set), len(dm.test_set)) == (36, 4)
    with pytest.raises(DatasetUnavailableError) as error:
        OmniglotDataModule(tmp_path, download=False, root_subdir="omniglot-small", sets=["images_background", "images_evaluation"]).setup()
    assert "omniglot-small/images_evaluation/<alphabet>/<character>/<drawing>.png" in str(error.value)


def test_missing_folder_names_dataset_folder_and_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailableError) as error:
        OmniglotDataModule(tmp_path, download=False).setup()
    message = str(error.value)
    assert "Omniglot was not found in" in message and str(tmp_path / "omniglot-py") in message
    assert "omniglot-py/images_background/<alphabet>/<character>/<drawing>.png" in message


def test_failed_download_ends_in_unavailable_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = []

    def offline(url: str, *args, **kwargs) -> None:
        attempts.append(url.rsplit("/", 1)[-1])
        raise URLError("network is unreachable")

    monkeypatch.setattr("torchvision.datasets.omniglot.download_and_extract_archive", offline)
    with pytest.raises(DatasetUnavailableError) as error:
        OmniglotDataModule(tmp_path, download=True, sets=["images_background", "images_evaluation"]).prepare_data()
    assert attempts == ["images_background.zip"]  # the first failure ends the attempt
    assert "Download was not possible: URLError" in str(error.value) and "images_evaluation" in str(error.value)


@pytest.mark.parametrize("damage", ["truncated", "other size"])
def test_unreadable_or_odd_sized_png_is_corrupt(omniglot_root, damage: str) -> None:
    root, _ = omniglot_root
    png = next((root / "omniglot-py" / "images_background" / "Latin" / "character01").glob("*.png"))
    if damage == "truncated":
        png.write_bytes(png.read_bytes()[:40])
    else:
        Image.new("1", (64, 64), 1).save(png)
    with pytest.raises(DatasetCorruptError, match="Omniglot files in .* could not be read"):
        OmniglotDataModule(root, download=False).setup()


def test_bad_options_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"must be \[1, H, W\]"):
        OmniglotDataModule(tmp_path, image_shape=[3, 28, 28])
    with pytest.raises(ValueError, match="data.sets"):
        OmniglotDataModule(tmp_path, sets=["images_training"])
    with pytest.raises(ValueError, match="test_fraction"):
        OmniglotDataModule(tmp_path, test_fraction=1.0)


def test_config_instantiates_the_datamodule(omniglot_root) -> None:
    root, _ = omniglot_root
    cfg = compose_config(["data=omniglot", f"paths.data_dir={root}", "data.download=false"], root / "run")
    with pytest.raises(ValueError, match="has 5 classes but data.num_classes is 1623: set data.num_classes=5"):
        instantiate(cfg.data).setup()  # a partial copy must not silently size classifiers for all 1623
    dm = instantiate(cfg.data, num_classes=5)
    dm.setup()
    assert isinstance(dm, OmniglotDataModule) and dm.image_shape == (1, 28, 28) and dm.num_classes == 5


def test_real_subset_has_8_alphabets_242_characters_4840_drawings(real_data_dir: Path) -> None:
    if not (real_data_dir / "omniglot-small" / "images_background").is_dir():
        pytest.skip("the Omniglot subset is not under the data root")
    dm = OmniglotDataModule(real_data_dir, download=False, root_subdir="omniglot-small")
    dm.setup()
    assert len(dm.alphabet_names) == 8 and dm.num_classes == 242
    assert torch.bincount(dm.alphabet_of_class).tolist() == [24, 22, 24, 47, 40, 26, 42, 17]  # Balinese ... Tagalog
    assert (len(dm.train_set), len(dm.test_set)) == (4356, 484)
    assert torch.bincount(dm.train_set.labels).tolist() == [18] * 242
    assert torch.bincount(dm.test_set.labels).tolist() == [2] * 242
    assert dm.image_shape == (1, 28, 28)
    assert float(dm.train_set.images.float().mean()) < 64  # inverted: mostly dark paper, bright strokes


def test_missing_omniglot_names_the_subset_and_a_partial_copy_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailableError, match="loads with data=omniglot_small"):
        OmniglotDataModule(tmp_path, download=False).setup()
    (tmp_path / "omniglot-small" / "images_background" / "Greek" / "character01").mkdir(parents=True)
    with pytest.raises(DatasetUnavailableError, match="holds images_background but not images_evaluation.*data.sets=null"):
        OmniglotDataModule(tmp_path, root_subdir="omniglot-small", sets=OMNIGLOT_SETS, download=False).setup()
