"""python -m lossy_memory.report <run or multirun folder> [...] [--out DIR] [--skip-unfinished] [--jpeg]

Every finished run under the folders, grouped by kind (compression, distillation, continual, condensation) into the
papers' table shapes, seeds pooled (mean ± std): writes ``report.md`` and, per kind, ``<kind>.csv`` and
``<kind>.png`` into ``--out`` (default: the first folder), and prints the Markdown.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from lossy_memory.memory.jpeg import MNIST_ITEMS, mnist_rate_distortion
from lossy_memory.report import compression, condensation, continual, distillation
from lossy_memory.report.runs import ReportError, class_name, collect
from lossy_memory.runtime import default_data_dir

TABLES = {"compression": compression, "distillation": distillation, "continual": continual, "condensation": condensation}


def report(folders: Sequence[Path], out: Path, skip_unfinished: bool = False, jpeg_items: int = 0,
           data_dir: Path | None = None) -> str:
    """The Markdown report of every finished run under ``folders`` (with JPEG on the first ``jpeg_items`` MNIST training
    images beside the compression runs, when > 0); the tables' files written into ``out``."""
    runs = collect(folders, skip_unfinished) if folders else []
    jpeg = mnist_rate_distortion(data_dir or default_data_dir(), jpeg_items) if jpeg_items else []
    other = Counter(class_name(run.config.get("model")) for run in runs if run.kind not in TABLES)
    for model, count in sorted(other.items()):
        print(f"skipped {count} run(s) of {model or 'no model'}: no table for it (this report knows {', '.join(TABLES)})", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    for kind, module in TABLES.items():
        kind_runs = [run for run in runs if run.kind == kind]
        if kind_runs or (kind == "compression" and jpeg):
            extra = {"jpeg": jpeg} if kind == "compression" else {}
            sections.append(f"## {kind} ({len(kind_runs)} runs)\n\n{module.table(kind_runs, out, **extra)}\n")
    if not sections:
        raise ReportError(f"none of the runs under {', '.join(map(str, folders))} has a table (runs of {', '.join(sorted(other))})")
    text = "\n".join(sections)
    (out / "report.md").write_text(text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lossy_memory.report", description=__doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("folders", nargs="*", type=Path, metavar="folder",
                        help="a run (outputs/runs/<run>) or a multirun (outputs/multiruns/<sweep>), or any folder above them")
    parser.add_argument("--out", type=Path, help="where report.md and the tables go (default: the first folder)")
    parser.add_argument("--skip-unfinished", action="store_true", help="report the finished runs, skipping those without results.json")
    parser.add_argument("--jpeg", action="store_true", help="add JPEG (qualities 1-100) to the compression table")
    parser.add_argument("--jpeg-items", type=int, default=MNIST_ITEMS, help="first N MNIST training images for --jpeg (default: %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=Path(default_data_dir()),
                        help="data root holding MNIST/raw (for --jpeg; default: $LOSSY_MEMORY_DATA_DIR)")
    args = parser.parse_args(argv)
    if not args.folders and not args.jpeg:
        parser.error("give at least one run or multirun folder, or --jpeg")
    if args.jpeg_items < 1:
        parser.error(f"--jpeg-items must be >= 1, got {args.jpeg_items}")
    if args.out is None and not args.folders:
        parser.error("--out is needed when no folder is given")
    out = args.out or args.folders[0]
    try:
        print(report(args.folders, out, args.skip_unfinished, args.jpeg_items if args.jpeg else 0, args.data_dir))
    except (ReportError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {out / 'report.md'} and the tables beside it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
