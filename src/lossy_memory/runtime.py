"""What every entry point needs before it instantiates anything: config resolvers, code version, seeding."""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"


def remove_fresh_run_dir(output_dir: str | Path, log_dir: str | Path) -> None:
    """Remove a run directory that a failed run left under ``log_dir``, unless it holds checkpoints (work to keep)."""
    output_dir, log_dir = Path(output_dir).resolve(), Path(log_dir).resolve()
    if output_dir != log_dir and output_dir.is_relative_to(log_dir) and not any((output_dir / "checkpoints").glob("*")):
        shutil.rmtree(output_dir, ignore_errors=True)


def user_errors_reported(task: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """An entry point's Hydra task in which bad input (ValueError, FileNotFoundError: raised with a message saying what is
    wrong and how to fix it) ends the process with that message on one line and exit status 1, instead of a
    traceback (``HYDRA_FULL_ERROR=1`` shows it), and leaves no fresh run directory behind."""

    @functools.wraps(task)
    def run(cfg: Any) -> Any:
        try:
            return task(cfg)
        except Exception as error:
            handled = error if isinstance(error, ValueError | FileNotFoundError) else error.__cause__  # Hydra wraps a
            if not isinstance(handled, ValueError | FileNotFoundError):  # constructor's error in an InstantiationException
                raise
            remove_fresh_run_dir(cfg.paths.output_dir, cfg.paths.log_dir)
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {handled}", file=sys.stderr, flush=True)
            sys.exit(1)

    return run


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


@functools.cache
def quiet_known_noise() -> None:
    """Silence third-party messages that say nothing about the run, which users read as trouble: Lightning's
    advertising tips, torch 2.14's deprecation of the ``LeafSpec`` check inside Lightning, and ModelCheckpoint's
    advice for manual optimisation (a continual learner's checkpoint is meant to hold the state after a load's updates,
    with the stream position that goes with it)."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropTips())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization and every_n_train_steps")


@functools.cache
def run_stamp() -> str:
    """A run-directory name unique across processes started in the same second (time, pid, random)."""
    return f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{os.getpid()}_{secrets.token_hex(2)}"


def wandb_offline() -> bool:
    """Log to W&B offline (files under the run directory, `wandb sync` later) unless an API key is configured."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") == "online":
        return False
    netrc = Path.home() / ".netrc"
    return not (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"))


def wandb_group() -> str | None:
    """Multirun jobs share one W&B group, named after the sweep directory; single runs have none."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    return Path(hydra_cfg.sweep.dir).name if hydra_cfg.mode == RunMode.MULTIRUN else None


def swept_settings() -> dict[str, str]:
    """In a multirun job, this job's value of each setting the sweep varies (a comma list, range or other sweep on the
    command line, or a sweeper's ``params``, Optuna's included), by key: what a dashboard groups the sweep's runs
    by. Empty in a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {}
    hydra_cfg, parser = HydraConfig.get(), OverridesParser.create()
    swept = set((hydra_cfg.sweeper.get("params") or {}).keys())
    command = Path(hydra_cfg.sweep.dir) / "multirun.yaml"  # the sweep's command line, saved before its jobs start
    if command.is_file():
        overrides = OmegaConf.load(command).hydra.overrides.task
        swept |= {o.key_or_group for o in parser.parse_overrides(list(overrides)) if o.is_sweep_override()}
    job = {o.key_or_group: o.get_value_element_as_str() for o in parser.parse_overrides(list(hydra_cfg.overrides.task))}
    return {key: job[key] for key in sorted(swept) if key in job}


def name_with_swept(name: str) -> str:
    """A run's display name: ``name``, and in a multirun job the settings this job's sweep gave it."""
    swept = swept_settings()
    return name if not swept else f"{name} " + ",".join(f"{k}={v}" for k, v in swept.items())


def default_data_dir() -> str:
    return os.environ.get("LOSSY_MEMORY_DATA_DIR") or str(PROJECT_ROOT / "data")


def sqlite_storage(path: str) -> str:
    """An SQLite URL for ``path`` (an Optuna study's storage), its folder made: SQLite creates the file, not the folder."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def recollection_latent(which: str, *, _parent_: Any) -> int:
    """``c`` or ``l`` of a recollection memory's latent (``memory.generator.latent.c: ${recollection_latent:c}``):
    the stream's own choice when its experiment pins them (``recollection_memory.c`` and ``.l``: the paper's generators
    for CIFAR-100), otherwise sized from the budget: the (c, l) of highest capacity whose ``memory.recollections``
    items, labels and task ids included, fit the budget (``memory.budget_bits``, or ``memory.lossless_equivalent``
    lossless images; ``lossy_memory.memory.budget.size_for_items``; the generator's parameters too with
    ``memory.count_generator``). A mixed memory's codes get ``lossy_fraction`` of the bits for as many fewer items, so
    it is sized like the recollection memory (the same (c, l), the same transfer generator). Giving
    ``memory.generator.latent.c`` and ``.l`` on the command line replaces both. Task ids count as one byte (streams of
    up to 256 tasks)."""
    from lossy_memory.memory.budget import lossless_bits, size_for_items

    if which not in ("c", "l"):
        raise ValueError(f"recollection_latent gives c or l, not {which!r}")
    memory = _parent_._get_parent()._get_parent()  # latent -> generator -> memory
    root = memory._get_root()
    pinned = OmegaConf.select(root, f"recollection_memory.{which}")
    if pinned is not None:
        return int(pinned)
    num_classes = OmegaConf.select(root, "model.num_classes")
    if num_classes is None or memory.get("recollections") is None:
        raise ValueError("a recollection memory sized from its budget needs memory.recollections and model.num_classes: set "
                         "both, or give memory.generator.latent.c and memory.generator.latent.l")
    image_shape = list(memory.generator.image_shape)
    budget = memory.budget_bits if memory.budget_bits is not None else (
        memory.lossless_equivalent * lossless_bits(image_shape, num_classes, num_tasks=256))
    chosen = size_for_items(memory.recollections, budget, image_shape, num_classes, num_tasks=256,
                            count_generator=bool(memory.count_generator), hidden=memory.generator.hidden)
    return chosen.c if which == "c" else chosen.l


def transfer_generator(source: str, *, _root_: Any) -> str | None:
    """The transfer generator a stream's recollection memory starts from: the DiscreteVAE ``+experiment=transfer_generator
    data=<source>`` publishes for the memory's latent and width, ``<artifact_dir>/transfer/<source>_c<c>_l<l>_h<filters>.ckpt``
    (``recollection_memory.generator_init: ${transfer_generator:omniglot_small}``); None for a memory without a generator."""
    generator = OmegaConf.select(_root_, "memory.generator")
    if generator is None:
        return None
    return (f"{_root_.paths.artifact_dir}/transfer/{source}_c{generator.latent.c}_l{generator.latent.l}_h{generator.hidden}.ckpt")


def register_resolvers() -> None:
    resolvers = {"run_stamp": run_stamp, "wandb_offline": wandb_offline, "wandb_group": wandb_group, "name_with_swept": name_with_swept,
                 "sqlite_storage": sqlite_storage, "recollection_latent": recollection_latent, "transfer_generator": transfer_generator,
                 "default_data_dir": default_data_dir, "project_root": lambda: str(PROJECT_ROOT)}
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            # run_stamp cached in the config: Hydra copies a sweep's resolver cache into each job's config, so jobs run by
            # other processes (joblib workers, submitit / SLURM jobs) resolve the sweep's folder to the same name
            OmegaConf.register_new_resolver(name, resolver, use_cache=name == "run_stamp")


@functools.cache
def git_state() -> dict[str, str | bool]:
    """The commit the code ran from, and whether the work tree had uncommitted changes (read once per process: the
    code a process runs does not change under it)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True).stdout.strip()

    try:
        return {"sha": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"sha": "unknown", "dirty": False}
