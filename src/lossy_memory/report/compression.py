"""Distortion vs compression (the paper's Tables 6-7, Figure 1 left): a row per latent size (seeds pooled), JPEG beside.

A run's latent comes from its config, its storage from ``run.json``, its distortions from ``results.json``
(``train/distortion``, the paper's measure over the training set, and ``test/distortion``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lossy_memory.memory.jpeg import JpegPoint
from lossy_memory.report.runs import Pooled, ReportError, Run, class_name, mean_std, pool
from lossy_memory.writers import Point, markdown_table, rate_distortion_plot, write_csv

COLUMNS = ("kind", "c", "l", "h", "quality", "bits_per_item", "compression_ratio", "settings", "seeds", "distortion", "distortion_std",
           "test_distortion", "test_distortion_std")
SHOWN = ("kind", "c", "l", "h", "quality", "bits_per_item", "compression_ratio", "settings", "seeds", "distortion", "test_distortion")
# Config keys the columns show (the rest of what a sweep varies goes in "settings").
DESCRIBED = ("model._target_", "model.latent._target_", "model.latent.c", "model.latent.l", "model.latent.h")
LATENT_KINDS = {"CategoricalLatent": "categorical", "GaussianLatent": "continuous"}
KINDS = ("categorical", "continuous", "jpeg")
TRAIN_METRIC, TEST_METRIC = "train/distortion", "test/distortion"


def setting(run: Run) -> tuple:
    """(latent kind, c, l, h, bits per item, compression ratio): what a row compares."""
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
    return (kind, *sizes, float(storage["bits_per_item"]), float(storage["compression_ratio"]))


def row(group: Pooled) -> dict:
    kind, c, l, h, bits, ratio = group.key
    return {"kind": kind, "c": c, "l": l, "h": h, "bits_per_item": bits, "compression_ratio": ratio, "settings": group.settings, "seeds": group.seeds,
            "distortion": group.mean(TRAIN_METRIC), "distortion_std": group.std(TRAIN_METRIC),
            "test_distortion": group.mean(TEST_METRIC), "test_distortion_std": group.std(TEST_METRIC)}


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
    write_csv(out / "compression.csv", COLUMNS, rows)
    series = {kind: [Point(r["compression_ratio"], r["distortion"], label(r)) for r in rows if r["kind"] == kind] for kind in KINDS}
    rate_distortion_plot(out / "compression.png", series, xlabel="compression ratio (8-bit input bits / stored bits per item)",
                         ylabel="distortion (mean abs. error per pixel on [0, 1], training set)", title="MNIST: distortion vs compression")
    shown = [{**r, "bits_per_item": f"{r['bits_per_item']:.1f}", "compression_ratio": f"{r['compression_ratio']:.1f}",
              **{name: mean_std(r.get(name), r.get(f"{name}_std"), ".4f") for name in ("distortion", "test_distortion")}} for r in rows]
    return markdown_table([c for c in SHOWN if c != "settings" or any(r.get("settings") for r in rows)], shown)
