"""One way to collect runs for a report: every training run under the folders given (a folder that
``python -m lossy_memory.train`` made: ``config.yaml`` and ``run.json``), finished when the ``results.json`` it writes as
it ends is there; its kind read from the model it trained; seeds pooled by one function."""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# The model a run trained decides its kind, so which table it belongs to.
KINDS = {"DiscreteVAE": "compression", "ContinuousVAE": "compression", "GenerativeDistiller": "distillation",
         "ContinualLearner": "continual", "GradientMatchingCondenser": "condensation", "UnrolledDatasetDistiller": "condensation"}


class ReportError(ValueError):
    """Runs that cannot be reported, with what is wrong, where, and what to do."""


def class_name(node: Mapping[str, Any] | None) -> str:
    """The class a config node instantiates (``_target_``'s last part), or "" for none."""
    return str((node or {}).get("_target_", "")).rsplit(".", 1)[-1]


@dataclass(frozen=True)
class Run:
    folder: Path
    config: dict  # the resolved config.yaml
    results: dict  # results.json: the final metrics
    record: dict  # run.json: code version, storage report

    @property
    def kind(self) -> str:
        return KINDS.get(class_name(self.config.get("model")), "other")

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    @property
    def metrics(self) -> dict[str, float]:
        return self.results.get("metrics") or {}

    def file(self, name: str) -> dict:
        """One of the run's own results files (``continual.json``, ``distillation.json``, ``evaluation.json``)."""
        path = self.folder / name
        if not path.is_file():
            raise ReportError(f"{self.folder}: no {name}, which a {self.kind} run writes as it ends; was it written by an older "
                              "version, or deleted? Rerun it, or leave the folder out")
        return json.loads(path.read_text())


def is_run(folder: Path) -> bool:
    return (folder / "config.yaml").is_file() and (folder / "run.json").is_file()


def job_order(root: Path) -> Callable[[Path], tuple]:
    """Sort key: a multirun's numbered job folders in number order (2 before 10), other names alphabetically."""
    return lambda path: tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.relative_to(root).parts)


def run_folders(folder: Path) -> list[Path]:
    """The runs in ``folder``: the folder itself when it is a run, else every run below it (multirun jobs), in job order."""
    if not folder.is_dir():
        raise ReportError(f"{folder}: no such folder")
    if is_run(folder):
        return [folder]
    return sorted((path.parent for path in folder.rglob("run.json") if is_run(path.parent)), key=job_order(folder))


def collect(folders: Sequence[Path], skip_unfinished: bool = False) -> list[Run]:
    """Every finished run under ``folders``. A run without ``results.json`` (still running, stopped, or crashed) is an
    error naming it, unless ``skip_unfinished``; a folder with no run in it is always one."""
    runs: list[Run] = []
    unfinished: list[Path] = []
    for folder in folders:
        found = run_folders(Path(folder))
        if not found:
            raise ReportError(f"{folder}: no runs in it (the folders with config.yaml and run.json that "
                              "`python -m lossy_memory.train` makes, under outputs/runs/ or outputs/multiruns/<sweep>/)")
        for run_dir in found:
            if not (run_dir / "results.json").is_file():
                unfinished.append(run_dir)
                continue
            runs.append(Run(run_dir, yaml.safe_load((run_dir / "config.yaml").read_text()) or {},
                            json.loads((run_dir / "results.json").read_text()), json.loads((run_dir / "run.json").read_text())))
    if unfinished and not skip_unfinished:
        raise ReportError("runs without results.json (still running, stopped or crashed; pass --skip-unfinished to report the "
                          "others):\n  " + "\n  ".join(map(str, unfinished)))
    for run_dir in unfinished:
        print(f"skipped {run_dir}: no results.json (unfinished)", file=sys.stderr)
    if not runs:
        raise ReportError(f"no finished runs under {', '.join(map(str, folders))}")
    return runs


Value = float | Sequence[float] | None
# Config keys that say where or how a run ran, not what it computed: never part of a setting.
RUN_SPECIFIC = ("paths", "logger", "callbacks", "hydra", "task_name", "tags", "ckpt_path", "allow_resume_changes", "cpu_threads",
                "optimized_metric", "test", "trainer.devices", "trainer.enable_progress_bar")


def flat(node: Any, prefix: str = "") -> dict[str, str]:
    """A config as {dotted key: value as text}."""
    if isinstance(node, Mapping):
        return {k: v for name, child in node.items() for k, v in flat(child, f"{prefix}{name}.").items()}
    return {prefix[:-1]: json.dumps(node) if isinstance(node, list) else str(node)}


def covers(prefixes: Sequence[str], key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def varied_settings(runs: Sequence[Run], described: Sequence[str]) -> list[str]:
    """Config keys that take more than one value among the runs having them: what a sweep varied. Left out: keys the
    table's own columns show (``described``, prefixes), where and how a run ran (``RUN_SPECIFIC``, folders: ``*_dir``),
    copies of another key through interpolation, and seeds (any key named ``seed``: the one key pooled over)."""
    configs = [flat(run.config) for run in runs]
    values: dict[str, list[str | None]] = {k: [config.get(k) for config in configs] for config in configs for k in config}

    def alias(key: str) -> bool:  # an interpolated copy, e.g. model.memory.kind of memory.kind: the shorter key stands
        parts = key.split(".")
        return any(values.get(".".join(parts[i:])) == values[key] for i in range(1, len(parts)))

    return sorted(k for k, v in values.items() if len({x for x in v if x is not None}) > 1 and not alias(k)
                  and k.rsplit(".", 1)[-1] != "seed" and not k.endswith("_dir") and not covers(RUN_SPECIFIC, k)
                  and not covers(described, k))


@dataclass
class Pooled:
    """The runs of one setting (they differ by seed only) and each figure's values over them. ``settings``: the
    values of the keys that were varied but that the table's columns do not show ("" when none)."""

    key: tuple
    runs: list[Run]
    settings: str = ""
    values: dict[str, list[float]] = field(default_factory=dict)

    @property
    def seeds(self) -> int:
        return len(self.runs)

    def mean(self, name: str) -> float | None:
        values = self.values.get(name)
        return statistics.fmean(values) if values else None

    def std(self, name: str) -> float | None:
        """The sample standard deviation, None from fewer than two values."""
        values = self.values.get(name) or []
        return statistics.stdev(values) if len(values) > 1 else None

    def text(self, name: str, spec: str = ".3f") -> str:
        return mean_std(self.mean(name), self.std(name), spec)


def mean_std(mean: float | None, std: float | None, spec: str = ".3f") -> str:
    """A table cell: "mean ± std", the one value without a std, "" without a value."""
    if mean is None:
        return ""
    return format(mean, spec) if std is None else f"{mean:{spec}} ± {std:{spec}}"


def pool(runs: Sequence[Run], key: Callable[[Run], tuple], values: Callable[[Run], Mapping[str, Value]],
         described: Sequence[str] = ()) -> list[Pooled]:
    """Runs grouped by setting, in key order: by ``key`` (what the table's columns show, read from config keys under
    ``described``) and by every other config key the runs vary (an lr sweep's lr); so runs pooled together differ by
    seed only. Each figure's values are gathered over the group (a run may give one value or several, e.g. one per
    evaluated network; None or NaN: not defined for that run). Two runs of one setting with the same seed are an
    error: one run reported twice."""
    varied = varied_settings(runs, described)
    groups: dict[tuple, Pooled] = {}
    seen: dict[tuple, Run] = {}
    for run in runs:
        config = flat(run.config)
        group_key = (*key(run), tuple((k, config[k]) for k in varied if k in config))
        twin = seen.setdefault((group_key, str(run.seed)), run)
        if twin is not run:
            raise ReportError(f"{twin.folder} and {run.folder}: the same setting {group_key} with the same seed {run.seed}; "
                              "report each run once (or give them different seeds)")
        group = groups.setdefault(group_key, Pooled(group_key[:-1], [], ", ".join(f"{k}={short(v)}" for k, v in group_key[-1])))
        group.runs.append(run)
        for name, value in values(run).items():
            items = value if isinstance(value, Sequence) else [value]
            group.values.setdefault(name, []).extend(float(v) for v in items if v is not None and not math.isnan(float(v)))
    return [groups[k] for k in sorted(groups, key=lambda k: tuple(map(natural, k)))]


def short(value: str) -> str:
    """A config value as a table shows it: numbers to 4 significant digits (an Optuna trial's lr has 16)."""
    try:
        return f"{float(value):.4g}" if any(c.isdigit() for c in value) else value
    except ValueError:
        return value


def natural(value: Any) -> tuple:
    """Sort key mixing types: numbers in numeric order, then text, then None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")
    return (2, 0.0, "") if value is None else (1, 0.0, str(value))
