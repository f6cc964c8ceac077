"""Tables and plots shared by the report commands: CSV for other tools, Markdown for READMEs and terminals,
PNG for a glance. Values that do not apply to a row are None and are left blank."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple


class Point(NamedTuple):
    x: float
    y: float
    label: str = ""


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({name: "" if row.get(name) is None else row[name] for name in columns})


def markdown_table(columns: Sequence[str], rows: Iterable[Mapping[str, Any]], formats: Mapping[str, str] | None = None) -> str:
    """A GitHub Markdown table; ``formats`` maps a column to a format spec for its numbers (e.g. ".4f")."""
    formats = formats or {}

    def cell(name: str, value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float) and name in formats:
            return format(value, formats[name])
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(name, row.get(name)) for name in columns) + " |" for row in rows]
    return "\n".join(lines)


def rate_distortion_plot(path: Path, series: Mapping[str, Sequence[Point]], *, xlabel: str, ylabel: str, title: str) -> None:
    """One marker per point (labelled), and per series a line through its lowest y at each x: the best
    trade-off that method reached there. Log x axis, since rates span orders of magnitude. Written with the
    Agg canvas directly, so no GUI backend is touched."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5.5), layout="constrained")
    axes = figure.subplots()
    for index, (name, points) in enumerate(series.items()):
        if not points:
            continue
        color = f"C{index}"  # by position in ``series``, so a method keeps its colour when another is absent
        best: dict[float, float] = {}
        for point in points:
            best[point.x] = min(point.y, best.get(point.x, point.y))
        xs = sorted(best)
        axes.plot(xs, [best[x] for x in xs], "-", color=color, alpha=0.6, label=name)
        axes.plot([p.x for p in points], [p.y for p in points], "o", color=color, markersize=4)
        for point in points:
            if point.label:
                axes.annotate(point.label, (point.x, point.y), textcoords="offset points", xytext=(3, 3), fontsize=6, color=color)
    axes.set_xscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.savefig(path, dpi=150)


def curve_plot(path: Path, series: Mapping[str, Sequence[Point]], *, xlabel: str, ylabel: str, title: str) -> None:
    """One line with markers per series (points in x order), log x axis; Agg canvas, no GUI backend."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5.5), layout="constrained")
    axes = figure.subplots()
    for index, (name, points) in enumerate(series.items()):
        points = sorted(points)
        axes.plot([p.x for p in points], [p.y for p in points], "o-", color=f"C{index % 10}", markersize=4, label=name)
    axes.set_xscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.savefig(path, dpi=150)
