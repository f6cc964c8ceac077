"""Distortion vs compression (the paper's Tables 6-7, Figure 1 left): a row per latent size (seeds pooled), JPEG beside,
the paper's distortion at the same point, and the paper's points drawn on the figure.

A run's latent comes from its config, its storage from ``run.json``, its distortions from ``results.json``
(``train/distortion``, the paper's measure over the training set, and ``test/distortion``).

The paper's claim is that categorical latents beat continuous ones at equal compression. The points never share a
compression exactly, so each continuous row gets ``categorical_best``: the lowest categorical distortion at that
compression or more (fewer bits). Below a continuous row's own distortion, the categorical curve beats it there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lossy_memory.memory.budget import code_bits
from lossy_memory.memory.jpeg import JpegPoint
from lossy_memory.report.runs import Pooled, ReportError, Run, class_name, mean_std, pool
from lossy_memory.writers import Point, markdown_table, rate_distortion_plot, write_csv

COLUMNS = ("kind", "c", "l", "h", "quality", "bits_per_item", "compression_ratio", "lr", "settings", "seeds", "distortion", "distortion_std",
           "test_distortion", "test_distortion_std", "paper", "categorical_best", "paper_categorical_best")
SHOWN = ("kind", "c", "l", "h", "quality", "bits_per_item", "compression_ratio", "lr", "settings", "seeds", "distortion", "test_distortion",
         "paper", "categorical_best", "paper_categorical_best")
# Config keys the columns show (the rest of what a sweep varies goes in "settings"). The learning rate is a column: the
# paper's protocol picks it per latent size (mnist_compression's lr_by_latent), so it differs from row to row.
DESCRIBED = ("model._target_", "model.latent._target_", "model.latent.c", "model.latent.l", "model.latent.h", "model.optimizer.lr")
LATENT_KINDS = {"CategoricalLatent": "categorical", "GaussianLatent": "continuous"}
KINDS = ("categorical", "continuous", "jpeg")
TRAIN_METRIC, TEST_METRIC = "train/distortion", "test/distortion"
INPUT_BITS = 28 * 28 * 8  # an MNIST image: what the paper's compression ratios divide
# The paper's training distortion (500 epochs, best of 4 learning rates): Table 6 by (c, l), and Table 7 by our h. Its
# compression of 49/h means 128 bits per h, so its h = 1, 2, 3, 5, 7, 20 are our float32 h = 4, 8, 12, 20, 28, 80.
PAPER_CATEGORICAL = {
    (6, 20): 0.06609, (10, 20): 0.04965, (6, 16): 0.07546, (12, 10): 0.05497, (10, 14): 0.05410, (24, 3): 0.05988,
    (38, 2): 0.05785, (6, 2): 0.13831, (40, 3): 0.04158, (20, 2): 0.08446, (8, 6): 0.08423, (12, 6): 0.06756,
    (30, 2): 0.06958, (24, 6): 0.04065, (4, 37): 0.07795, (8, 15): 0.06812, (48, 10): 0.01649, (209, 8): 0.01455,
    (12, 37): 0.03996, (313, 4): 0.01420, (392, 3): 0.01348, (50, 18): 0.01859, (168, 2): 0.01955, (108, 3): 0.01894,
    (62, 2): 0.04073, (208, 2): 0.01832, (68, 5): 0.01849}
PAPER_CONTINUOUS = {4: 0.135196, 8: 0.124725, 12: 0.0947032, 20: 0.0354035, 28: 0.031808, 80: 0.0149272}


def setting(run: Run) -> tuple:
    """(latent kind, c, l, h, bits per item, compression ratio, learning rate): what a row compares."""
    latent = (run.config.get("model") or {}).get("latent") or {}
    kind = LATENT_KINDS.get(class_name(latent))
    if kind is None:
        raise ReportError(f"{run.folder}: config.yaml has model.latent._target_={latent.get('_target_')!r}; "
                          f"this report knows {', '.join(LATENT_KINDS)}")
    storage = run.record.get("storage") or {}
    if "bits_per_item" not in storage or "compression_ratio" not in storage:
        raise ReportError(f"{run.folder}: run.json has no storage report (bits_per_item, compression_ratio)")
    missing = [name for name in (TRAIN_METRIC, TEST_METRIC) if name not in run.metrics]
    if missing:
        raise ReportError(f"{run.folder}: no {' or '.join(missing)} in results.json (a compression run logs both in its test "
                          "stage: test=true, data.eval_on_train=true)")
    sizes = (latent.get("c"), latent.get("l"), None) if kind == "categorical" else (None, None, latent.get("h"))
    lr = ((run.config.get("model") or {}).get("optimizer") or {}).get("lr")
    return (kind, *sizes, float(storage["bits_per_item"]), float(storage["compression_ratio"]), None if lr is None else float(lr))


def row(group: Pooled) -> dict:
    kind, c, l, h, bits, ratio, lr = group.key
    return {"kind": kind, "c": c, "l": l, "h": h, "bits_per_item": bits, "compression_ratio": ratio, "lr": lr, "settings": group.settings,
            "seeds": group.seeds,
            "distortion": group.mean(TRAIN_METRIC), "distortion_std": group.std(TRAIN_METRIC),
            "test_distortion": group.mean(TEST_METRIC), "test_distortion_std": group.std(TEST_METRIC)}


def paper_distortion(row: dict) -> float | None:
    if row["kind"] == "categorical":
        return PAPER_CATEGORICAL.get((row["c"], row["l"]))
    return PAPER_CONTINUOUS.get(row["h"]) if row["kind"] == "continuous" else None


def paper_points() -> dict[str, list[Point]]:
    """The paper's Tables 6 and 7 as (compression, distortion) points, by kind."""
    return {"categorical": [Point(INPUT_BITS / code_bits(c, l), d) for (c, l), d in PAPER_CATEGORICAL.items()],
            "continuous": [Point(INPUT_BITS / (32 * h), d) for h, d in PAPER_CONTINUOUS.items()]}


def best_at_or_above(points: Sequence[Point], compression: float) -> float | None:
    """The lowest distortion among ``points`` whose compression is at least ``compression`` (None if none is)."""
    # A relative tolerance: the paper's 128 bits per h and our c*ceil(log2 l) can land on the same ratio.
    return min((p.y for p in points if p.x >= compression * (1 - 1e-9)), default=None)


def label(row: dict) -> str:
    if row["kind"] == "categorical":
        return f"c{row['c']},l{row['l']}"
    return f"h{row['h']}" if row["kind"] == "continuous" else f"q{row['quality']}"


def table(runs: Sequence[Run], out: Path, jpeg: Sequence[JpegPoint] = ()) -> str:
    """Writes ``compression.csv`` and ``compression.png`` into ``out``; returns the Markdown table."""
    groups = pool(runs, setting, lambda run: {TRAIN_METRIC: run.metrics[TRAIN_METRIC], TEST_METRIC: run.metrics[TEST_METRIC]},
                  DESCRIBED)
    rows = [row(group) for group in groups]
    rows += [{"kind": "jpeg", "quality": p.quality, "bits_per_item": p.bits_per_item, "compression_ratio": p.compression_ratio,
              "distortion": p.distortion} for p in jpeg]
    rows.sort(key=lambda r: (KINDS.index(r["kind"]), r["compression_ratio"], r["distortion"]))
    series = {kind: [Point(r["compression_ratio"], r["distortion"], label(r)) for r in rows if r["kind"] == kind] for kind in KINDS}
    paper = paper_points()
    for r in rows:
        r["paper"] = paper_distortion(r)
        if r["kind"] == "continuous":
            r["categorical_best"] = best_at_or_above(series["categorical"], r["compression_ratio"])
            r["paper_categorical_best"] = best_at_or_above(paper["categorical"], r["compression_ratio"])
    write_csv(out / "compression.csv", COLUMNS, rows)
    rate_distortion_plot(out / "compression.png", series, reference=paper,
                         xlabel="compression ratio (8-bit input bits / stored bits per item)",
                         ylabel="distortion (mean abs. error per pixel on [0, 1], training set)", title="MNIST: distortion vs compression")
    shown = [{**r, "bits_per_item": f"{r['bits_per_item']:.1f}", "compression_ratio": f"{r['compression_ratio']:.1f}",
              "lr": "" if r.get("lr") is None else f"{r['lr']:g}",
              **{name: mean_std(r.get(name), r.get(f"{name}_std"), ".4f") for name in ("distortion", "test_distortion")},
              **{name: "" if r.get(name) is None else f"{r[name]:.4f}" for name in ("paper", "categorical_best", "paper_categorical_best")}}
             for r in rows]
    # Columns that no row fills (no continuous runs: no categorical_best) are left out of the Markdown.
    shown_columns = [c for c in SHOWN if c not in ("settings", "paper", "categorical_best", "paper_categorical_best")
                     or any(r.get(c) for r in shown)]
    return markdown_table(shown_columns, shown) + beats_continuous(rows)


def beats_continuous(rows: Sequence[dict]) -> str:
    """One line under the table: where the categorical curve beats each continuous point, ours and the paper's."""
    continuous = [r for r in rows if r["kind"] == "continuous" and r.get("categorical_best") is not None]
    if not continuous:
        return ""
    lost = [f"h={r['h']} ({r['compression_ratio']:.1f}x: {r['categorical_best']:.4f} vs {r['distortion']:.4f})"
            for r in continuous if r["categorical_best"] >= r["distortion"]]
    paper_lost = [r for r in continuous if r["paper"] is not None and r["paper_categorical_best"] is not None
                  and r["paper_categorical_best"] >= r["paper"]]
    return (f"\n\nCategorical at equal or higher compression beats continuous at {len(continuous) - len(lost)} of {len(continuous)} "
            f"continuous points (paper: {len(continuous) - len(paper_lost)} of {len(continuous)})"
            + (f"; not at {', '.join(lost)}." if lost else "."))
