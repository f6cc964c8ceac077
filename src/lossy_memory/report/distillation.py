"""Distillation without training data (the paper's Tables 2, 3 and 8): methods by episodes, seeds pooled.

A run's method comes from its ``distillation.json`` (source, sampling, generator size) and its config (the student);
its accuracies at each episode count from the same file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lossy_memory.report.runs import Pooled, Run, class_name, pool
from lossy_memory.writers import Point, curve_plot, markdown_table, write_csv

# Config keys the method name says (the rest of what a sweep varies goes in "settings").
DESCRIBED = ("distill_source", "generator_c", "classifier", "model.student", "model.source", "model.sampling", "model.targets",
             "model.lossless_fraction", "model.generator_ckpt")
SAMPLING_NAMES = {"RandomSampling": "buffer sampling", "ActiveSampling": "active", "DiverseSampling": "diverse",
                  "ActiveDiverseSampling": "active + diverse"}


def method(run: Run) -> tuple[str, float | None]:
    """(the row label, e.g. "buffer sampling, c=168" or "lossless 2% (random)", the student named when it is not LeNet5;
    the storage in bits)."""
    record = run.file("distillation.json")
    if record["source"] == "real":
        name = "real data, true labels" if record["targets"] == "labels" else "real inputs, teacher targets"
    elif record["source"] == "lossless":
        sampling = SAMPLING_NAMES[record["sampling"]].replace("buffer sampling", "random")
        name = f"lossless {100 * record['lossless_fraction']:g}% ({sampling})"
    else:
        sampling = "code sampling" if record["sampling_source"] == "codes" else SAMPLING_NAMES[record["sampling"]]
        name = f"{sampling}, c={record['generator_bits_per_item']}"
    student = class_name((run.config.get("model") or {}).get("student"))
    return (name if student == "LeNet5" else f"{name} -> {student}"), record.get("storage/total_bits")


def accuracies(run: Run) -> dict[str, float]:
    """Test accuracy (%) at each episode count."""
    return {episodes: 100 * accuracy for episodes, accuracy in run.file("distillation.json")["accuracy_at"].items()}


def table(runs: Sequence[Run], out: Path) -> str:
    """Writes ``distillation.csv`` and ``distillation.png`` (accuracy against episodes, log x: the paper's Figure 1,
    right) into ``out``; returns the Markdown table (mean ± std over seeds)."""
    groups: list[Pooled] = pool(runs, method, accuracies, DESCRIBED)
    episodes = sorted({e for group in groups for e in group.values}, key=int)
    rows = [{"method": g.key[0], "settings": g.settings, "seeds": g.seeds, "storage_bits": g.key[1],
             **{k: v for e in episodes for k, v in ((e, g.mean(e)), (f"{e}_std", g.std(e)))}} for g in groups]
    write_csv(out / "distillation.csv", ["method", "settings", "seeds", "storage_bits", *[c for e in episodes for c in (e, f"{e}_std")]], rows)
    curve_plot(out / "distillation.png", {" ".join(filter(None, (r["method"], r["settings"]))): [Point(int(e), r[e]) for e in episodes if r[e] is not None] for r in rows},
               xlabel="episodes (training examples seen by the student)", ylabel="student test accuracy (%)",
               title="Distillation without training data")
    shown = [{**r, **{e: g.text(e, ".2f") for e in episodes}} for r, g in zip(rows, groups)]
    return markdown_table(["method", *(["settings"] if any(g.settings for g in groups) else []), "seeds", "storage_bits", *episodes], shown)
