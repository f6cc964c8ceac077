"""Gathers distortion vs compression of MNIST (the paper's Tables 6-7) from finished sweeps into one table:

    python -m lossy_memory.compression_report <multirun_dir> [<multirun_dir> ...] [--jpeg] [--out DIR]

Every job folder of a multirun (``outputs/multiruns/<stamp>_<task>/<job num>/``) gives a row: its latent from
``config.yaml``, its storage from ``run.json``, its distortions from ``csv/metrics.csv`` (``train/distortion``,
the paper's measure over the training set, and ``test/distortion``). ``--jpeg`` adds JPEG on the first 10,000
MNIST training images (lossy_memory.memory.jpeg; its distortion is over those images, test_distortion blank). Writes ``compression.csv`` and ``compression.png`` to
``--out`` (default: the first multirun folder) and prints the table as Markdown.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from lossy_memory.memory.jpeg import MNIST_ITEMS, mnist_rate_distortion
from lossy_memory.reports import Point, markdown_table, rate_distortion_plot, write_csv
from lossy_memory.runtime import default_data_dir

COLUMNS = ("kind", "c", "l", "h", "quality", "bits_per_item", "compression_ratio", "distortion", "test_distortion", "job")
FORMATS = {"bits_per_item": ".1f", "compression_ratio": ".1f", "distortion": ".4f", "test_distortion": ".4f"}
KINDS = ("categorical", "continuous", "jpeg")
LATENT_KINDS = {"CategoricalLatent": "categorical", "GaussianLatent": "continuous"}
TRAIN_METRIC, TEST_METRIC = "train/distortion", "test/distortion"


class ReportError(ValueError):
    """A sweep folder that cannot be reported, with what is wrong and where."""


@dataclass(frozen=True)
class Row:
    kind: str
    bits_per_item: float
    compression_ratio: float
    distortion: float
    test_distortion: float | None = None
    c: int | None = None
    l: int | None = None
    h: int | None = None
    quality: int | None = None
    job: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "categorical":
            return f"c{self.c},l{self.l}"
        return f"h{self.h}" if self.kind == "continuous" else f"q{self.quality}"


def is_job(folder: Path) -> bool:
    return (folder / ".hydra").is_dir() or (folder / "config.yaml").is_file()


def job_dirs(multirun_dir: Path) -> list[Path]:
    """Job folders of a multirun (the sub-folders Hydra made for jobs), in job order; a single run's folder
    (``outputs/runs/...``) is its own one job."""
    if not multirun_dir.is_dir():
        raise ReportError(f"{multirun_dir}: no such folder")
    if is_job(multirun_dir):
        return [multirun_dir]
    jobs = [d for d in multirun_dir.iterdir() if d.is_dir() and not d.name.startswith(".") and is_job(d)]
    return sorted(jobs, key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))


def last_values(metrics_csv: Path, names: Sequence[str]) -> dict[str, float]:
    """The last logged value of each named metric (CSVLogger leaves cells of other metrics blank)."""
    found: dict[str, float] = {}
    with metrics_csv.open(newline="") as file:
        for record in csv.DictReader(file):
            found.update({name: float(record[name]) for name in names if record.get(name)})
    return found


def read_job(job: Path) -> Row | str:
    """The job's row, or what is missing from it (a job that has not finished, or crashed)."""
    missing = [name for name in ("config.yaml", "run.json", "csv/metrics.csv") if not (job / name).is_file()]
    if missing:
        return "no " + ", ".join(missing)
    storage = json.loads((job / "run.json").read_text()).get("storage")
    if not storage or "bits_per_item" not in storage or "compression_ratio" not in storage:
        return "no storage report (bits_per_item, compression_ratio) in run.json"
    metrics = last_values(job / "csv" / "metrics.csv", (TRAIN_METRIC, TEST_METRIC))
    if TRAIN_METRIC not in metrics or TEST_METRIC not in metrics:
        absent = [name for name in (TRAIN_METRIC, TEST_METRIC) if name not in metrics]
        hint = " (did the run reach its test stage, with data.eval_on_train=true?)"
        return "no " + " or ".join(absent) + " in csv/metrics.csv" + hint
    latent = (yaml.safe_load((job / "config.yaml").read_text()).get("model") or {}).get("latent") or {}
    kind = LATENT_KINDS.get(str(latent.get("_target_", "")).rsplit(".", 1)[-1])
    if kind is None:
        raise ReportError(f"{job}: config.yaml has model.latent._target_={latent.get('_target_')!r}; "
                          f"this report knows {', '.join(LATENT_KINDS)}")
    sizes = {"c": latent.get("c"), "l": latent.get("l")} if kind == "categorical" else {"h": latent.get("h")}
    return Row(kind, float(storage["bits_per_item"]), float(storage["compression_ratio"]),
               metrics[TRAIN_METRIC], metrics[TEST_METRIC], job=str(job), **sizes)


def gather(multirun_dirs: Sequence[Path], skip_unfinished: bool = False) -> list[Row]:
    """Rows of every job of every folder. A job without its results is an error naming it, unless
    ``skip_unfinished``; a folder with no finished job is always one."""
    rows: list[Row] = []
    problems: list[str] = []
    for folder in multirun_dirs:
        jobs = job_dirs(folder)
        if not jobs:
            raise ReportError(f"{folder}: no job folders (the numbered folders `python -m lossy_memory.train ... --multirun` writes)")
        results = {job: read_job(job) for job in jobs}
        finished = [row for row in results.values() if isinstance(row, Row)]
        unfinished = [f"{job}: {result}" for job, result in results.items() if isinstance(result, str)]
        if not finished:
            raise ReportError(f"{folder}: no finished jobs\n  " + "\n  ".join(unfinished))
        rows += finished
        problems += unfinished
    if problems and not skip_unfinished:
        raise ReportError("unfinished jobs (pass --skip-unfinished to report the others):\n  " + "\n  ".join(problems))
    for problem in problems:
        print(f"skipped {problem}", file=sys.stderr)
    return rows


def jpeg_rows(data_dir: Path, items: int) -> list[Row]:
    return [Row("jpeg", p.bits_per_item, p.compression_ratio, p.distortion, quality=p.quality)
            for p in mnist_rate_distortion(data_dir, items)]


def write_report(rows: Sequence[Row], out: Path) -> str:
    """Writes compression.csv and compression.png into ``out``; returns the Markdown table."""
    rows = sorted(rows, key=lambda r: (KINDS.index(r.kind), r.compression_ratio, r.distortion))
    out.mkdir(parents=True, exist_ok=True)
    records = [asdict(row) for row in rows]
    write_csv(out / "compression.csv", COLUMNS, records)
    series = {kind: [Point(r.compression_ratio, r.distortion, r.label) for r in rows if r.kind == kind] for kind in KINDS}
    rate_distortion_plot(out / "compression.png", series, xlabel="compression ratio (8-bit input bits / stored bits per item)",
                         ylabel="distortion (mean abs. error per pixel on [0, 1], training set)", title="MNIST: distortion vs compression")
    return markdown_table(COLUMNS[:-1], records, FORMATS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lossy_memory.compression_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("multirun_dirs", nargs="*", type=Path, metavar="multirun_dir", help="outputs/multiruns/<stamp>_<task> folders (or single outputs/runs/... folders)")
    parser.add_argument("--jpeg", action="store_true", help="add JPEG (qualities 1-100) on the first 10,000 MNIST training images")
    parser.add_argument("--jpeg-items", type=int, default=MNIST_ITEMS, help="first N MNIST training images for --jpeg (default: %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=Path(default_data_dir()), help="data root holding MNIST/raw (for --jpeg; default: $LOSSY_MEMORY_DATA_DIR)")
    parser.add_argument("--out", type=Path, help="folder for compression.csv and compression.png (default: the first multirun folder)")
    parser.add_argument("--skip-unfinished", action="store_true", help="report finished jobs, skipping those without results")
    args = parser.parse_args(argv)
    if not args.multirun_dirs and not args.jpeg:
        parser.error("give at least one multirun folder, or --jpeg")
    if args.jpeg_items < 1:
        parser.error(f"--jpeg-items must be >= 1, got {args.jpeg_items}")
    if args.out is None and not args.multirun_dirs:
        parser.error("--out is needed when no multirun folder is given")
    try:
        rows = gather(args.multirun_dirs, args.skip_unfinished)
        if args.jpeg:
            rows += jpeg_rows(args.data_dir, args.jpeg_items)
        out = args.out or args.multirun_dirs[0]
        print(write_report(rows, out))
    except (ReportError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"\nwrote {out / 'compression.csv'} and {out / 'compression.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
