"""Synthetic sets (Dataset Distillation, Wang et al. 2018; gradient matching, Zhao et al. 2021): a row per method,
dataset, images per class and evaluation network, with the test accuracy of the networks trained on the set
(mean ± std over every network evaluated, from all seeds: the papers' measure), the seed and network counts.

A run's method comes from its config; its accuracies from its ``synthetic/evaluation.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lossy_memory.report.runs import Run, class_name, pool
from lossy_memory.writers import Point, curve_plot, markdown_table, write_csv

# Config keys the columns show (the rest of what a sweep varies goes in "settings").
DESCRIBED = ("data", "model._target_", "model.init", "model.images_per_class", "model.images_per_class_per_step", "model.steps",
             "model.image_shape", "model.num_classes", "model.eval_net", "model.cross_arch", "eval_classifier")
COLUMNS = ("method", "dataset", "images_per_class", "settings", "evaluated_on", "seeds", "networks", "accuracy", "accuracy_std")


def method(run: Run) -> tuple[str, int]:
    """(the method's name, its images per class)."""
    model = run.config["model"]
    if class_name(model) == "GradientMatchingCondenser":
        return f"gradient matching ({model.get('init', 'real')} init)", int(model["images_per_class"])
    return f"dataset distillation ({model.get('init', 'fixed')} init)", int(model["images_per_class_per_step"]) * int(model["steps"])


def evaluations(run: Run) -> dict[str, dict]:
    """{evaluation network's name: its result}: gradient matching's evaluation net and any cross-architecture ones
    (``evaluation.json`` keys whose value holds accuracies), or Dataset Distillation's one network."""
    record = run.file("synthetic/evaluation.json")
    if "accuracies" in record:
        return {class_name(run.config.get("classifier")) or "net": record}
    named = {name: result for name, result in record.items() if isinstance(result, dict) and "accuracies" in result}
    if "eval_net" in named:
        named[class_name(run.config.get("eval_classifier")) or "eval_net"] = named.pop("eval_net")
    return named


def table(runs: Sequence[Run], out: Path) -> str:
    """Writes ``condensation.csv`` and ``condensation.png`` (accuracy against images per class) into ``out``; returns
    the Markdown table (accuracies in %)."""
    groups = pool(runs, lambda run: (*method(run), class_name(run.config.get("data"))),
                  lambda run: {name: [100 * a for a in result["accuracies"]] for name, result in evaluations(run).items()}, DESCRIBED)
    rows, cells = [], []
    for g in groups:  # one row per evaluation network of the setting
        for network in sorted(g.values):
            rows.append({"method": g.key[0], "images_per_class": g.key[1], "dataset": g.key[2], "settings": g.settings, "evaluated_on": network,
                         "seeds": g.seeds, "networks": len(g.values[network]), "accuracy": g.mean(network), "accuracy_std": g.std(network)})
            cells.append(g.text(network, ".2f"))
    write_csv(out / "condensation.csv", COLUMNS, rows)
    series: dict[str, list[Point]] = {}
    for r in rows:
        series.setdefault(" ".join(filter(None, (f"{r['method']} -> {r['evaluated_on']}", r["settings"]))), []).append(Point(r["images_per_class"], r["accuracy"]))
    curve_plot(out / "condensation.png", series, xlabel="synthetic images per class", ylabel="test accuracy (%)",
               title="Synthetic sets: accuracy of networks trained on them")
    shown = [c for c in COLUMNS if c != "accuracy_std" and (c != "settings" or any(r["settings"] for r in rows))]
    return markdown_table(shown, [{**r, "accuracy": cell} for r, cell in zip(rows, cells)])
