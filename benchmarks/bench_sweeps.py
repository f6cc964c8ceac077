"""Sweeps on one machine: a 4-job multirun with the parallel launcher (``hydra/launcher=joblib``, 2 jobs at a time,
each with its share of the cores) against the same sweep run one job after another (Hydra's basic launcher), side by
side; wall time of the whole ``python -m lossy_memory.train -m ...`` command, imports and data loading included.

The jobs: the whole split-MNIST stream with lossless replay (seeds 1-4), the experiment's defaults. Bar: the parallel
sweep takes less wall time than the basic one (on this 2-core machine at most two jobs can run at once). The parallel
launcher starts worker processes that import everything again (about 5 s each here), so it pays for jobs that run
longer than that; a sweep of a few seconds per job is faster in one process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOBS = ["+experiment=mnist_split_lifelong", "seed=1,2,3,4", "callbacks.rich_progress_bar=null",
        "+trainer.enable_progress_bar=false"]
LAUNCHERS = {"basic (one job after another)": [], "joblib, 2 jobs at a time": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]}


def sweep_seconds(launcher: list[str], folder: Path) -> float:
    """Wall time of the whole multirun command; fails loudly if any job failed."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "lossy_memory.train", "-m", *JOBS, *launcher, f"hydra.sweep.dir={folder}"],
                            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            cwd=Path(__file__).resolve().parents[1])
    if result.returncode != 0:
        raise RuntimeError(f"the sweep failed: {result.stderr[-2000:]}")
    if len(list(folder.glob("*/results.json"))) != 4:
        raise RuntimeError(f"the sweep in {folder} did not finish its 4 jobs")
    return time.perf_counter() - start


def main() -> None:
    print(f"4-job sweep of split MNIST (5 tasks, lossless replay, seeds 1-4) on {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    seconds = {}
    with tempfile.TemporaryDirectory() as root:
        for name, launcher in LAUNCHERS.items():
            seconds[name] = sweep_seconds(launcher, Path(root) / f"sweep{len(seconds)}")
            print(f"{name:<32}{seconds[name]:>8.1f} s", flush=True)
    basic, parallel = seconds.values()
    print(f"parallel / basic wall time: {parallel / basic:.2f}x (bar < 1: {'OK' if parallel < basic else 'NOT MET'})")


if __name__ == "__main__":
    main()
