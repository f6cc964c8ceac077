"""Gathers continual-learning runs into the paper's table shape (Tables 4 and 5):

    python -m lossy_memory.continual_report <folder> [<folder> ...] [--out DIR]

Every ``continual.json`` under the folders (runs or multiruns of ``+experiment=*_lifelong`` / ``table4_*`` /
``table5_*``) is one run; its ``config.yaml`` names the stream, strategy, memory kind, budget and seed. Runs
that differ only by seed are averaged: mean +- std over seeds of the final average accuracy (task-agnostic and
task-aware) and forgetting, with the seed count. Writes ``continual.csv`` to ``--out`` (default: the first folder)
and prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from lossy_memory.reports import markdown_table, write_csv

KEYS = ("stream", "strategy", "memory", "budget", "constraint")
METRICS = ("final_average_accuracy", "task_aware_final_average_accuracy", "forgetting")
COLUMNS = [*KEYS, "seeds", *METRICS, "memory_items"]


def run_record(path: Path) -> dict:
    """One run's key (what it compares) and figures, from its continual.json and its resolved config (the run's own
    ``config.yaml``, or Hydra's ``.hydra/config.yaml``)."""
    record = json.loads(path.read_text())
    config_file = next((f for f in (path.parent / "config.yaml", path.parent / ".hydra" / "config.yaml") if f.is_file()), None)
    if config_file is None:
        raise ValueError(f"{path}: no config.yaml (or .hydra/config.yaml) beside it: cannot tell which run this is")
    cfg = yaml.safe_load(config_file.read_text())
    strategy = cfg["strategy"]["_target_"].rsplit(".", 1)[-1]
    memory = cfg.get("memory") or {}
    metrics = record["metrics"]
    if strategy == "OnlineFineTuning" or not memory:
        kind, budget, constraint = "none", "-", "-"
    else:
        kind = memory["kind"]
        if kind != "lossless" and memory.get("generator"):
            kind = f"{kind} c={memory['generator']['latent']['c']}"
        budget = f"{memory['lossless_equivalent']:g}" if memory.get("lossless_equivalent") is not None else f"{memory['budget_bits']:.0f} bits"
        constraint = "total" if memory.get("count_generator") else "incremental"
    return {"stream": cfg["data"]["_target_"].rsplit(".", 1)[-1], "strategy": strategy, "memory": kind, "budget": budget,
            "constraint": constraint, "seed": cfg.get("seed"), "tasks_trained": metrics["tasks_trained"],
            "num_tasks": metrics["num_tasks"], "memory_items": metrics.get("storage_memory_items", 0),
            **{m: float("nan") if metrics.get(m) is None else metrics[m] for m in METRICS}}  # JSON null: undefined


def mean_std(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def gather(folders: Sequence[Path]) -> list[dict]:
    """One row per compared setting (seeds pooled), in a stable order."""
    runs = [run_record(p) for folder in folders for p in sorted(Path(folder).rglob("continual.json"))]
    if not runs:
        raise ValueError(f"no continual.json under {', '.join(map(str, folders))}")
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        if run["tasks_trained"] != run["num_tasks"]:
            print(f"skipping an unfinished run ({run['tasks_trained']}/{run['num_tasks']} tasks): {run}", file=sys.stderr)
            continue
        groups.setdefault(tuple(run[k] for k in KEYS), []).append(run)
    rows = []
    for key in sorted(groups, key=lambda k: tuple(str(v) for v in k)):
        members = groups[key]
        seeds = sorted({m["seed"] for m in members}, key=str)
        if len(seeds) != len(members):
            raise ValueError(f"{dict(zip(KEYS, key))}: {len(members)} runs but {len(seeds)} distinct seeds: the same seed twice")
        rows.append({**dict(zip(KEYS, key)), "seeds": len(members),
                     **{m: mean_std([r[m] for r in members]) for m in METRICS},
                     "memory_items": f"{statistics.mean(r['memory_items'] for r in members):.0f}"})
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="where continual.csv goes (default: the first folder)")
    args = parser.parse_args(argv)
    rows = gather(args.folders)
    out = args.out or args.folders[0]
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "continual.csv", COLUMNS, rows)
    print(markdown_table(COLUMNS, rows))
    print(f"\n(mean ± std over seeds; written {out / 'continual.csv'})")


if __name__ == "__main__":
    main()
