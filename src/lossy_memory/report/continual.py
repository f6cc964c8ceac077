"""Continual learning (the paper's Tables 4 and 5): a row per stream, strategy, memory, budget and constraint, seeds
pooled (mean ± std of the final average accuracy, task-agnostic and task-aware, and of forgetting).

A run's setting comes from its config, its figures from its ``continual.json``; a stream cut short has no final
figure and is left out (said on stderr).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from lossy_memory.report.runs import Run, class_name, natural, pool
from lossy_memory.writers import Point, curve_plot, markdown_table, write_csv

KEYS = ("stream", "strategy", "N", "memory", "budget", "constraint")
# Config keys the columns show (data: the stream; the rest of what a sweep varies goes in "settings"). A stream's
# recollection_memory / paper_generator blocks are what its memory reads: the memory column shows what they made.
DESCRIBED = ("data", "model.image_shape", "model.num_classes", "strategy._target_", "strategy.steps", "memory.kind",
             "memory.lossless_equivalent", "memory.budget_bits", "memory.count_generator", "memory.generator.latent.c",
             "memory.generator.latent.l", "memory.generator_init", "memory.recollections", "recollection_memory", "paper_generator")
METRICS = ("final_average_accuracy", "task_aware_final_average_accuracy", "forgetting")
# The paper's final retention (%) by (stream, memory, budget, N); online fine-tuning has budget None. Its Omniglot
# stream is all 50 alphabets with a ResNet-18: the subset's figures are beside it for direction, not level.
PAPER = {
    "CIFAR100Stream": {("none", None, 1): 33.3, ("lossless", 10, 1): 29.4, ("lossless", 50, 1): 33.4, ("lossless", 200, 1): 43.0,
                       ("recollection", 10, 1): 39.7, ("recollection", 50, 1): 47.9, ("recollection", 200, 1): 51.6},
    "OmniglotStream": {("none", None, 1): 3.5, ("lossless", 10, 1): 3.6, ("lossless", 50, 1): 4.3, ("lossless", 50, 3): 4.8,
                       ("recollection", 10, 1): 5.0, ("recollection", 50, 1): 9.3, ("recollection", 50, 3): 13.0},
}


def setting(run: Run) -> tuple:
    cfg = run.config
    strategy = class_name(cfg.get("strategy"))
    steps = (cfg.get("strategy") or {}).get("steps", 1)
    memory = cfg.get("memory") or {}
    if strategy == "OnlineFineTuning" or not memory:
        kind, budget, constraint = "none", None, None
    else:
        kind = memory["kind"]
        if kind != "lossless" and memory.get("generator"):
            latent = memory["generator"]["latent"]
            kind = f"{kind} c={latent['c']}" + (f" l={latent['l']}" if latent.get("l", 2) != 2 else "")
            kind += ", transfer" if memory.get("generator_init") else ""
        budget = memory["lossless_equivalent"] if memory.get("budget_bits") is None else f"{memory['budget_bits']:.0f} bits"
        constraint = "total" if memory.get("count_generator") else "incremental"
    return class_name(cfg.get("data")), strategy, steps, kind, budget, constraint


def paper_retention(key: tuple) -> str:
    """The paper's figure for a row's setting ("" where it has none)."""
    stream, _, steps, kind, budget, constraint = key
    if constraint == "total":
        return ""
    figure = PAPER.get(stream, {}).get((kind.split(" ")[0], budget, steps))
    return "" if figure is None else f"{figure}%"


def figures(run: Run) -> dict[str, float | None]:
    metrics = run.file("continual.json")["metrics"]
    return {**{m: metrics.get(m) for m in METRICS}, "memory_items": metrics.get("storage_memory_items", 0)}


def finished(run: Run) -> bool:
    metrics = run.file("continual.json")["metrics"]
    if metrics["tasks_trained"] == metrics["num_tasks"]:
        return True
    print(f"skipped {run.folder}: its stream stopped after {metrics['tasks_trained']} of {metrics['num_tasks']} tasks", file=sys.stderr)
    return False


def table(runs: Sequence[Run], out: Path) -> str:
    """Writes ``continual.csv`` and ``continual.png`` (final average accuracy against the budget, per strategy and
    memory) into ``out``; returns the Markdown table."""
    by_kind: dict[str, list[Run]] = {}  # a memory kind's own defaults (a recollection memory's anchor) are not settings
    for run in runs:
        if finished(run):
            by_kind.setdefault(setting(run)[3].split(" ")[0], []).append(run)
    groups = sorted((g for kind_runs in by_kind.values() for g in pool(kind_runs, setting, figures, DESCRIBED)),
                    key=lambda g: tuple(map(natural, g.key)))
    rows = [{**dict(zip(KEYS, g.key)), "settings": g.settings, "seeds": g.seeds, **{m: g.text(m) for m in METRICS},
             "memory_items": f"{g.mean('memory_items'):.0f}", "paper": paper_retention(g.key)} for g in groups]
    columns = [*KEYS, *(["settings"] if any(g.settings for g in groups) else []), "seeds", *METRICS, "memory_items",
               *(["paper"] if any(row["paper"] for row in rows) else [])]
    write_csv(out / "continual.csv", [*KEYS, "settings", "seeds", *[c for m in METRICS for c in (m, f"{m}_std")], "memory_items", "paper"],
              [{**row, **{c: v for m in METRICS for c, v in ((m, g.mean(m)), (f"{m}_std", g.std(m)))}} for row, g in zip(rows, groups)])
    series: dict[str, list[Point]] = {}
    for g in groups:
        stream, strategy, steps, memory, budget, _ = g.key
        if isinstance(budget, int | float) and g.mean("final_average_accuracy") is not None:
            label = f"{stream}: {strategy} N={steps}, {memory.split(' c=')[0]}"  # c changes with the budget: one curve per memory kind
            series.setdefault(" ".join(filter(None, (label, g.settings))), []).append(Point(budget, g.mean("final_average_accuracy")))
    curve_plot(out / "continual.png", series, xlabel="memory budget (lossless-equivalent images)",
               ylabel="final average accuracy (task-agnostic)", title="Continual learning: accuracy at equal bits")
    return markdown_table(columns, rows)
