"""`make bench`: every benchmark in one run, each printing its own table of figures and ratios.

Each ``benchmarks/bench_*.py`` module exposes ``main()``; they run in file-name order.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import torch


def main() -> None:
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CUDA {'available' if torch.cuda.is_available() else 'not available'}")
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    selected = sys.argv[1:] or names
    for name in selected:
        print(f"\n== {name} ==", flush=True)
        importlib.import_module(f"benchmarks.{name}").main()


if __name__ == "__main__":
    main()
