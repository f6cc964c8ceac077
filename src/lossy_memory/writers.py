"""How results are written: JSON (valid, NaN as null), CSV for other tools, Markdown for READMEs and terminals, PNG
plots for a glance. Values that do not apply to a row are None and are left blank. Runs write their own results files
with these (a continual run's, ``write_continual_results``, at the end of its pass); ``lossy_memory.report`` writes its
tables with them."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple


class Point(NamedTuple):
    x: float
    y: float
    label: str = ""


def jsonable(value: Any) -> Any:
    """``value`` with every NaN or infinite float as None (JSON has no NaN: readers other than Python's reject it)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def write_json(path: Path, value: Any) -> None:
    """Valid JSON (no NaN: None instead), indented, the one way every results file of a run is written."""
    path.write_text(json.dumps(jsonable(value), indent=2, allow_nan=False))


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


def rate_distortion_plot(path: Path, series: Mapping[str, Sequence[Point]], *, xlabel: str, ylabel: str, title: str,
                         reference: Mapping[str, Sequence[Point]] | None = None) -> None:
    """One marker per point (labelled), and per series a line through its lowest y at each x: the best
    trade-off that method reached there. ``reference`` (a paper's points, by series name) is drawn in its series'
    colour with open markers and a dashed line. Log x axis, since rates span orders of magnitude. Written with the
    Agg canvas directly, so no GUI backend is touched."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5.5), layout="constrained")
    axes = figure.subplots()
    for index, (name, points) in enumerate(series.items()):
        color = f"C{index}"  # by position in ``series``, so a method keeps its colour when another is absent
        if points:
            xs, ys = _lower_envelope(points)
            axes.plot(xs, ys, "-", color=color, alpha=0.6, label=name)
            axes.plot([p.x for p in points], [p.y for p in points], "o", color=color, markersize=4)
            for point in points:
                if point.label:
                    axes.annotate(point.label, (point.x, point.y), textcoords="offset points", xytext=(3, 3), fontsize=6, color=color)
        if (reference or {}).get(name):
            xs, ys = _lower_envelope(reference[name])
            axes.plot(xs, ys, "--", color=color, alpha=0.6, label=f"{name} (paper)")
            axes.plot([p.x for p in reference[name]], [p.y for p in reference[name]], "o", color=color, markersize=5,
                      markerfacecolor="none")
    axes.set_xscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.savefig(path, dpi=150)


def _lower_envelope(points: Sequence[Point]) -> tuple[list[float], list[float]]:
    """x in order, and the lowest y at each x."""
    best: dict[float, float] = {}
    for point in points:
        best[point.x] = min(point.y, best.get(point.x, point.y))
    xs = sorted(best)
    return xs, [best[x] for x in xs]


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


def write_continual_results(folder: Path, record: Mapping[str, Any], loggers: Sequence[Any] = ()) -> None:
    """A continual run's results in its folder: ``continual.json`` (``record``, see ``ContinualEvaluator.record``), R of
    both kinds as CSV and PNG heatmaps (``accuracy_matrix*``), ``retention.csv`` for a retention stream; and R to the
    loggers that take tables (W&B: a table; TensorBoard: the CSV as text)."""
    folder.mkdir(parents=True, exist_ok=True)
    metrics = record["metrics"]
    setting = record.get("setting") or {}
    for suffix, prefix, kind in (("", "", "task-agnostic"), ("_task_aware", "task_aware_", "task-aware")):
        values = [[math.nan if v is None else v for v in row] for row in record[f"accuracy_matrix{suffix}"]]
        write_matrix_csv(folder / f"accuracy_matrix{suffix}.csv", values)
        if metrics.get("finished", True):
            result = f"final avg {metrics.get(f'{prefix}final_average_accuracy', math.nan):.3f}"
        else:
            result = (f"UNFINISHED: {metrics['tasks_trained']} of {metrics['num_tasks']} tasks, "
                      f"seen avg {metrics.get(f'{prefix}seen_tasks_accuracy', math.nan):.3f}")
        title = f"{setting['strategy']}, {setting['memory']}\n" if setting else ""
        plot_matrix(folder / f"accuracy_matrix{suffix}.png", values, f"{title}R[i, j] ({kind}), {result}")
    retention = record.get("retention")
    if retention is not None:
        points = ([(0, retention["initial"])] if retention["initial"] is not None else []) + list(zip(retention["examples"], retention["accuracy"]))
        (folder / "retention.csv").write_text("examples,accuracy\n" + "".join(f"{e},{v:.4f}\n" for e, v in points))
    write_json(folder / "continual.json", record)
    matrix = record["accuracy_matrix"]
    for logger in loggers:
        if hasattr(logger, "log_table"):  # W&B: the matrix as a table and its heatmap
            logger.log_table("cl/accuracy_matrix", columns=[f"task {j}" for j in range(len(matrix))], data=matrix)
            logger.log_image("cl/accuracy_matrix_heatmap", [str(folder / "accuracy_matrix.png")])
        elif hasattr(getattr(logger, "experiment", None), "add_text"):  # TensorBoard
            logger.experiment.add_text("cl/accuracy_matrix", (folder / "accuracy_matrix.csv").read_text())


def write_matrix_csv(path: Path, values: Sequence[Sequence[float]]) -> None:
    lines = ["trained_through," + ",".join(f"task{j}" for j in range(len(values)))]
    lines += [f"task{i}," + ",".join("" if math.isnan(v) else f"{v:.4f}" for v in row) for i, row in enumerate(values)]
    path.write_text("\n".join(lines) + "\n")


def plot_matrix(path: Path, values: Sequence[Sequence[float]], title: str) -> None:
    """A heatmap of R with the values written in (Agg canvas: no GUI backend)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    T = len(values)
    size = min(12.0, max(6.0, 2.0 + 0.45 * T))
    figure = Figure(figsize=(size, size * 0.85), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow([[100 * v for v in row] for row in values], vmin=0, vmax=100, cmap="viridis")
    figure.colorbar(image, ax=axes, label="accuracy (%)")
    for axis in (axes.xaxis, axes.yaxis):
        axis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("evaluated on task j")
    axes.set_ylabel("after training task i")
    axes.set_title(title, fontsize=9)
    if T <= 20:
        for i, row in enumerate(values):
            for j, v in enumerate(row):
                if not math.isnan(v):
                    axes.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
    figure.savefig(path, dpi=110)
