"""Omniglot by alphabet: characters are classes, drawings split 90%/10% within each character."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.datasets import Omniglot
from torchvision.transforms.v2 import functional as F

from lossy_memory.data.image_datamodule import ImageDataModule

OMNIGLOT_SETS = ("images_background", "images_evaluation")


class _OmniglotZips(Omniglot):
    """torchvision's Omniglot download (md5-checked zip, extracted in place) into ``<root>/<subdir>``."""

    def __init__(self, root: Path, subdir: str, background: bool):
        self.folder = subdir  # torchvision reads the class attribute ``folder`` to place the files
        super().__init__(root, background=background, download=True)


class OmniglotDataModule(ImageDataModule):
    """All characters of the alphabets found, as classes with global ids (alphabets in sorted name order).

    Images are decoded once, resized to ``image_shape`` (antialiased) and kept as uint8, with ink = 255 when
    ``invert`` (the files draw black strokes on white). Of each character's drawings a seeded ``test_fraction``
    (2 of 20 by default, as in Yang & Hospedales 2017) forms the test split; ``split_seed`` is separate from
    ``seed`` so the benchmark split stays the same across experiment seeds.

    ``root_subdir`` is the folder holding the official set folders (``images_background``,
    ``images_evaluation``); ``sets`` names the ones required (and downloaded), or None for whichever are there,
    which lets a partial copy such as ``omniglot-small`` (only some alphabets) load. ``num_classes`` is the
    number of characters found, known once a split has been read.
    """

    name = "Omniglot"
    num_classes = 1623

    def __init__(
        self,
        data_dir: str | Path,
        *,
        image_shape: Sequence[int] | None = (1, 28, 28),
        root_subdir: str = "omniglot-py",
        sets: Sequence[str] | None = None,
        invert: bool = True,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        **kwargs,
    ):
        super().__init__(data_dir, image_shape=image_shape, **kwargs)
        if self.expected_shape is not None and (len(self.expected_shape) != 3 or self.expected_shape[0] != 1):
            raise ValueError(f"Omniglot is greyscale: data.image_shape must be [1, H, W], got {list(self.expected_shape)}")
        if sets is not None and (not sets or not set(sets) <= set(OMNIGLOT_SETS)):
            raise ValueError(f"data.sets must be null or a non-empty list from {list(OMNIGLOT_SETS)}, got {sets}")
        if not 0 < test_fraction < 1:
            raise ValueError(f"data.test_fraction must be in (0, 1), got {test_fraction}")
        self.root_subdir, self.sets, self.invert = root_subdir, None if sets is None else tuple(sets), invert
        self.test_fraction, self.split_seed = test_fraction, split_seed
        self.alphabet_names: list[str] = []
        self.character_names: list[str] = []
        self.alphabet_of_class = torch.empty(0, dtype=torch.long)
        self._loaded: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @property
    def folder(self) -> Path:
        return self.data_dir / self.root_subdir

    @property
    def layout(self) -> str:
        lines = [f"  {self.root_subdir}/{s}/<alphabet>/<character>/<drawing>.png" for s in self.sets or OMNIGLOT_SETS]
        which = "all of" if self.sets else "any of"
        return "\n".join(lines) + f"\n({which} the official Omniglot folders, as torchvision.datasets.Omniglot extracts them)"

    def _set_folders(self) -> list[Path]:
        return [self.folder / s for s in self.sets or OMNIGLOT_SETS if (self.folder / s).is_dir()]

    def files_present(self) -> bool:
        found = self._set_folders()
        return len(found) == len(self.sets) if self.sets else bool(found)

    def unavailable_advice(self) -> str:
        found = [p.name for p in self._set_folders()]
        if found:
            missing = [s for s in self.sets or OMNIGLOT_SETS if s not in found]
            return (f"{self.folder} holds {', '.join(found)} but not {', '.join(missing)}, which data.sets asks for: add "
                    "data.sets=null to load the set folders that are there (data=omniglot_small does, for the subset)")
        return ("The 8-alphabet Omniglot subset (folder omniglot-small, no download) loads with data=omniglot_small; "
                "Omniglot streams take data.root_subdir=omniglot-small data.sets=null")

    def download_files(self) -> None:
        for name in self.sets or OMNIGLOT_SETS:
            if not (self.folder / name).is_dir():
                _OmniglotZips(self.data_dir, self.root_subdir, background=name == "images_background")

    def alphabet_of(self, labels: torch.Tensor) -> torch.Tensor:
        """The alphabet index of each example, from its character label."""
        return self.alphabet_of_class[labels]

    def read_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if self._loaded is None:
            self._loaded = self._load()
        images, labels, is_test = self._loaded
        keep = is_test != train
        return images[keep], labels[keep]

    def _index(self) -> list[tuple[int, list[Path]]]:
        """(alphabet index, drawing files) per character, in sorted order; fills the name tables."""
        alphabets = sorted((a for s in self._set_folders() for a in s.iterdir() if a.is_dir()), key=lambda a: a.name)
        names = [a.name for a in alphabets]
        if len(set(names)) != len(names):
            raise ValueError(f"an alphabet appears in more than one set folder: {sorted({n for n in names if names.count(n) > 1})}")
        characters = []
        self.character_names = []
        for a, alphabet in enumerate(alphabets):
            for character in sorted(c for c in alphabet.iterdir() if c.is_dir()):
                characters.append((a, sorted(character.glob("*.png"))))
                self.character_names.append(f"{alphabet.name}/{character.name}")
        self.alphabet_names = names
        self.alphabet_of_class = torch.tensor([a for a, _ in characters], dtype=torch.long)
        self.num_classes = len(characters)
        return characters

    def _load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode every drawing once: uint8 images [N, 1, H, W], character labels and the test-split mask."""
        characters = self._index()
        files = [f for _, drawings in characters for f in drawings]
        if not files:
            return torch.empty(0, 1, 1, 1, dtype=torch.uint8), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.bool)
        labels = torch.repeat_interleave(torch.arange(len(characters)), torch.tensor([len(d) for _, d in characters]))
        return self._decode(files), labels, self._test_masks([len(d) for _, d in characters])

    def _test_masks(self, counts: list[int]) -> torch.Tensor:
        """Per character, a seeded choice of round(test_fraction * n) drawings (at least 1, leaving 1 to train)."""
        generator = torch.Generator().manual_seed(self.split_seed)
        masks = []
        for c, n in enumerate(counts):
            if n < 2:
                raise ValueError(f"character {self.character_names[c]} has {n} drawing(s); a train/test split needs 2")
            mask = torch.zeros(n, dtype=torch.bool)
            mask[torch.randperm(n, generator=generator)[: min(n - 1, max(1, round(n * self.test_fraction)))]] = True
            masks.append(mask)
        return torch.cat(masks)

    def _decode(self, files: list[Path]) -> torch.Tensor:
        """PNGs -> uint8 [N, 1, H, W], resized in batches (one call per 4096 images) and inverted if asked."""
        pixels = None
        for i, path in enumerate(files):
            with Image.open(path) as image:
                array = np.asarray(image.convert("L"))
            if pixels is None:
                pixels = np.empty((len(files), *array.shape), dtype=np.uint8)
            elif array.shape != pixels.shape[1:]:
                raise ValueError(f"{path} is {array.shape[1]}x{array.shape[0]} pixels, the others {pixels.shape[2]}x{pixels.shape[1]}")
            pixels[i] = array
        images = torch.from_numpy(pixels).unsqueeze(1)
        if self.expected_shape is not None and images.shape[2:] != self.expected_shape[1:]:
            images = torch.cat([F.resize(chunk, list(self.expected_shape[1:]), antialias=True) for chunk in images.split(4096)])
        return 255 - images if self.invert else images
