"""Gathers generative-distillation runs into the paper's table shape (methods by episodes; Tables 2, 3 and 8):

    python -m lossy_memory.distillation_report <folder> [<folder> ...] [--out DIR]

Every ``distillation.json`` under the folders (runs or multiruns of ``+experiment=mnist_distill*``) is one run. Runs
of the same method (source, sampling, generator size, student) are seeds: their accuracies are averaged (mean +- std
over seeds, the count beside them). Writes ``distillation.csv`` and ``distillation.png`` (test accuracy against
episodes, log x: the paper's Figure 1, right) to ``--out`` (default: the first folder) and prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from lossy_memory.reports import Point, curve_plot, markdown_table, write_csv

SAMPLING_NAMES = {"RandomSampling": "buffer sampling", "ActiveSampling": "active", "DiverseSampling": "diverse",
                  "ActiveDiverseSampling": "active + diverse"}


def method_name(record: dict, student: str) -> str:
    """The row label, e.g. "buffer sampling, c=168" or "lossless 2%"; the student is named when it is not LeNet5."""
    if record["source"] == "real":
        name = "real data, true labels" if record["targets"] == "labels" else "real inputs, teacher targets"
    elif record["source"] == "lossless":
        sampling = SAMPLING_NAMES[record["sampling"]].replace("buffer sampling", "random")
        name = f"lossless {100 * record['lossless_fraction']:g}% ({sampling})"
    else:
        sampling = "code sampling" if record["sampling_source"] == "codes" else SAMPLING_NAMES[record["sampling"]]
        name = f"{sampling}, c={record['generator_bits_per_item']}"
    return name if student == "LeNet5" else f"{name} -> {student}"


def gather(folders: Sequence[Path]) -> list[dict]:
    """One row per method: mean (and std) test accuracy at each episode count over its runs (seeds)."""
    runs: dict[str, list[dict]] = {}
    for folder in folders:
        if not folder.is_dir():
            raise SystemExit(f"{folder} is not a folder of distillation runs")
        for path in sorted(folder.rglob("distillation.json")):
            record = json.loads(path.read_text())
            if not (path.parent / "config.yaml").is_file():
                raise SystemExit(f"{path}: no config.yaml beside it (every lossy_memory.train run writes one), so its student "
                                 "network is unknown: report runs made by lossy_memory.train")
            config = yaml.safe_load((path.parent / "config.yaml").read_text())
            student = str(config["model"]["student"]["_target_"]).rsplit(".", 1)[-1]
            runs.setdefault(method_name(record, student), []).append(record)
    if not runs:
        raise SystemExit(f"no distillation.json under {', '.join(map(str, folders))}: run +experiment=mnist_distill first")
    rows = []
    for name, records in runs.items():
        row = {"method": name, "seeds": len(records), "storage_bits": records[0].get("storage/total_bits")}
        for episodes in sorted({int(e) for r in records for e in r["accuracy_at"]}):
            values = [100 * r["accuracy_at"][str(episodes)] for r in records if str(episodes) in r["accuracy_at"]]
            row[str(episodes)] = statistics.fmean(values)
            row[f"{episodes}_std"] = statistics.stdev(values) if len(values) > 1 else None
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = gather(args.folders)
    episodes = sorted({key for row in rows for key in row if key.isdigit()}, key=int)
    out = args.out or args.folders[0]
    out.mkdir(parents=True, exist_ok=True)
    columns = ["method", "seeds", "storage_bits", *[c for e in episodes for c in (e, f"{e}_std")]]
    write_csv(out / "distillation.csv", columns, rows)
    shown = [{**row, **{e: _cell(row, e) for e in episodes}} for row in rows]
    print(markdown_table(["method", "seeds", "storage_bits", *episodes], shown))
    series = {row["method"]: [Point(int(e), row[e]) for e in episodes if e in row] for row in rows}
    curve_plot(out / "distillation.png", series, xlabel="episodes (training examples seen by the student)",
               ylabel="student test accuracy (%)", title="Distillation without training data")
    print(f"\nwrote {out / 'distillation.csv'} and {out / 'distillation.png'}", file=sys.stderr)
    return rows


def _cell(row: dict, episodes: str) -> str | None:
    if episodes not in row:
        return None
    std = row.get(f"{episodes}_std")
    return f"{row[episodes]:.2f}" if std is None else f"{row[episodes]:.2f} ± {std:.2f}"


if __name__ == "__main__":
    main()
