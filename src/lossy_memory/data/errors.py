"""Errors for data that is missing or damaged: they say what was searched, what was expected and how to fix it."""

from __future__ import annotations

from pathlib import Path


class DatasetUnavailableError(FileNotFoundError):
    """The dataset's files are not where the config says, and could not be downloaded."""

    def __init__(self, dataset: str, folder: Path | str, layout: str, reason: str | None = None, advice: str | None = None):
        expected = "; ".join(line.strip() for line in layout.splitlines() if line.strip())
        parts = [f"{dataset} was not found in {folder}."]
        if reason:
            parts.append(f"Download was not possible: {reason}.")
        if advice:
            parts.append(f"{advice}.")
        parts += [f"Expected layout (under paths.data_dir): {expected}.",
                  "To fix: set LOSSY_MEMORY_DATA_DIR (or paths.data_dir=...) to a folder holding those files, "
                  "or run once on a machine with network access and data.download=true."]
        super().__init__(" ".join(parts))  # one line: what the user reads as the run's one error


class DatasetCorruptError(ValueError):
    """The dataset's files are there but cannot be read: truncated, or not in the expected format."""

    def __init__(self, dataset: str, folder: Path | str, reason: str):
        super().__init__(
            f"{dataset} files in {folder} could not be read ({reason}). They look truncated or corrupted: "
            f"delete them and download again (data.download=true), or copy an intact set."
        )
