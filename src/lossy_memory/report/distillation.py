"""Distillation without training data (the paper's Tables 2, 3 and 8): methods by episodes, seeds pooled.

A run's method comes from its ``distillation.json`` (source, sampling, generator size) and its config (the student);
its accuracies at each episode count from the same file. Where the paper has the same method, student and generator
size, its figure stands in square brackets beside ours, and its episode counts are columns even where no run of ours
reached them (``-``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lossy_memory.report.runs import Pooled, Run, class_name, pool
from lossy_memory.writers import Point, curve_plot, markdown_table, write_csv

# Config keys the method name says (the rest of what a sweep varies goes in "settings"). A run's length is not a
# setting: nothing in the distiller depends on it, so its first 10,000 episodes are those of a 10,000-episode run,
# and runs of different lengths pool per episode count.
DESCRIBED = ("distill_source", "generator_c", "classifier", "model.student", "model.source", "model.sampling", "model.targets",
             "model.lossless_fraction", "model.generator_ckpt", "model.max_episodes")
SAMPLING_NAMES = {"RandomSampling": "buffer sampling", "ActiveSampling": "active", "DiverseSampling": "diverse",
                  "ActiveDiverseSampling": "active + diverse"}
# The paper's student accuracy (%) after 10, 100, 1,000, 10,000 and 100,000 episodes, by row label: Tables 2 and 3
# (LeNet-5 student) and 8 (MLP student, labels ending "-> MLP"). Its generators for 10x, 50x and 100x total storage
# are c = 168, 62 and 38 two-valued variables, so rows match on c (ours reach 11.1x, 51.3x and 95.2x: README).
PAPER_EPISODES = ("10", "100", "1000", "10000", "100000")
PAPER = {
    "real data, true labels": (10.43, 19.63, 90.45, 97.11, 98.51),
    "real inputs, teacher targets": (10.07, 25.32, 91.01, 97.42, 98.63),
    "lossless 10% (random)": (9.94, 18.16, 88.88, 96.83, 97.99),
    "lossless 2% (random)": (11.07, 22.82, 90.71, 95.98, 96.14),
    "lossless 1% (random)": (10.70, 22.35, 89.93, 94.97, 94.92),
    "buffer sampling, c=168": (10.65, 19.34, 90.66, 96.77, 98.59),
    "buffer sampling, c=62": (10.99, 16.20, 90.52, 96.37, 98.17),
    "buffer sampling, c=38": (13.89, 21.06, 90.03, 95.65, 97.75),
    "active, c=168": (9.95, 14.80, 93.45, 98.61, 99.18),
    "active, c=38": (10.19, 22.57, 92.97, 97.53, 98.25),
    "active + diverse, c=168": (10.67, 27.05, 94.81, 98.59, 99.20),
    "active + diverse, c=38": (11.51, 29.93, 92.54, 97.66, 98.32),
    "real data, true labels -> MLP": (13.64, 36.37, 80.54, 91.04, 96.66),
    "real inputs, teacher targets -> MLP": (15.87, 38.56, 80.00, 90.86, 96.60),
    "lossless 10% (random) -> MLP": (17.04, 37.04, 79.08, 90.84, 95.02),
    "lossless 2% (random) -> MLP": (14.57, 38.35, 78.18, 88.38, 91.61),
    "lossless 1% (random) -> MLP": (15.13, 34.04, 77.76, 86.83, 88.97),
    "buffer sampling, c=168 -> MLP": (16.70, 37.16, 80.72, 91.37, 96.71),
    "buffer sampling, c=62 -> MLP": (11.80, 40.09, 80.00, 90.60, 96.24),
    "buffer sampling, c=38 -> MLP": (14.66, 42.31, 77.75, 90.46, 95.22),
}


def paper_accuracy(label: str, episodes: str) -> float | None:
    """The paper's figure for a row and episode count (None where it has none)."""
    figures = PAPER.get(label)
    return figures[PAPER_EPISODES.index(episodes)] if figures and episodes in PAPER_EPISODES else None


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
    paper_episodes = PAPER_EPISODES if any(group.key[0] in PAPER for group in groups) else ()
    episodes = sorted({e for group in groups for e in group.values}.union(paper_episodes), key=int)
    rows = [{"method": g.key[0], "settings": g.settings, "seeds": g.seeds, "storage_bits": g.key[1],
             **{k: v for e in episodes for k, v in ((e, g.mean(e)), (f"{e}_std", g.std(e)), (f"{e}_paper", paper_accuracy(g.key[0], e)))}}
            for g in groups]
    write_csv(out / "distillation.csv", ["method", "settings", "seeds", "storage_bits", *[c for e in episodes for c in (e, f"{e}_std", f"{e}_paper")]],
              rows)
    curve_plot(out / "distillation.png", {" ".join(filter(None, (r["method"], r["settings"]))): [Point(int(e), r[e]) for e in episodes if r[e] is not None] for r in rows},
               xlabel="episodes (training examples seen by the student)", ylabel="student test accuracy (%)",
               title="Distillation without training data")

    def cell(row: dict, group: Pooled, e: str) -> str:
        ours = group.text(e, ".2f") if e in group.values else "-"
        return ours if row[f"{e}_paper"] is None else f"{ours} [{row[f'{e}_paper']:.2f}]"

    shown = [{**r, **{e: cell(r, g, e) for e in episodes}} for r, g in zip(rows, groups)]
    return markdown_table(["method", *(["settings"] if any(g.settings for g in groups) else []), "seeds", "storage_bits", *episodes], shown)
