"""Reading what `python -m lossy_memory.train` left in a checkpoint: its config, the trained module, the buffer.

Every checkpoint carries the resolved run config (``run_config``, written by the RunRecord callback), so a module is
rebuilt from the config it was trained with and needs no other file. Errors name the file and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf

from lossy_memory.memory import ExperienceBuffer


def read_checkpoint(ckpt_path: str | Path) -> dict[str, Any]:
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: give the path of a <run dir>/checkpoints/<name>.ckpt")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a truncated, corrupted or foreign file: one clear message for all
        raise ValueError(f"checkpoint {path} cannot be read ({type(error).__name__}): "
                         "it is damaged or not a checkpoint; use another one (e.g. <run dir>/checkpoints/last.ckpt)") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"checkpoint {path} is not a Lightning checkpoint (no state_dict): use one written by `python -m lossy_memory.train`")
    return checkpoint


# Settings that do not change what a run computes: where it writes, how it logs, what it is called, how many threads.
RUN_INDEPENDENT = {"paths", "trainer", "callbacks", "logger", "hydra", "ckpt_path", "task_name", "tags", "test", "optimized_metric",
                   "cpu_threads", "allow_resume_changes", "hparams_search"}
LOCAL_PATHS = {"output_dir", "data_dir", "download", "root", "dirpath"}  # machine- or run-local values


def changed_settings(stored: Any, current: Any, prefix: str = "") -> list[str]:
    """``key: stored -> current`` for every setting that differs and changes what the run computes."""
    if isinstance(stored, dict) and isinstance(current, dict):
        changes = []
        for key in sorted(set(stored) | set(current), key=str):
            if (not prefix and key in RUN_INDEPENDENT) or key in LOCAL_PATHS:
                continue
            changes += changed_settings(stored.get(key, "<absent>"), current.get(key, "<absent>"), f"{prefix}{key}.")
        return changes
    return [] if stored == current else [f"{prefix.rstrip('.')}: {stored!r} -> {current!r}"]


def check_resume(ckpt_path: str | Path, current: dict[str, Any], allow_changes: bool = False) -> Path | None:
    """Check what starting from ``ckpt_path`` does. The checkpoint must be readable. If it was written by the same
    experiment (``task_name``), this resumes that run: every setting that changes what it computes must be as stored,
    unless ``allow_changes``, and the checkpoint's run directory (``<run dir>/checkpoints/<name>.ckpt``) is returned,
    for the run to go on there. Another experiment starting from a checkpoint (``mnist_nearest_neighbor`` from an
    ``mnist_compression`` run) is a new run: only its model must be the stored one; None is returned."""
    path = Path(ckpt_path)
    stored = OmegaConf.to_container(stored_run_config(path, read_checkpoint(path)), resolve=True)
    same_run = stored.get("task_name") == current.get("task_name")
    changes = changed_settings(stored, current) if same_run else changed_settings(stored.get("model"), current.get("model"), "model.")
    if changes and not allow_changes:
        shown = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8 else "")
        what = "resuming would not continue that run" if same_run else "its weights would not fit this model"
        raise ValueError(f"ckpt_path={path} was written with other settings, so {what}: {shown}. Use the run's own settings "
                         "(its config.yaml), or add allow_resume_changes=true to go on anyway")
    run_dir = path.parent.parent
    return run_dir if same_run and path.parent.name == "checkpoints" and (run_dir / "config.yaml").is_file() else None


def stored_run_config(ckpt_path: str | Path, checkpoint: dict[str, Any] | None = None) -> DictConfig:
    """The training config kept in a checkpoint by the RunRecord callback."""
    checkpoint = read_checkpoint(ckpt_path) if checkpoint is None else checkpoint
    if "run_config" not in checkpoint:
        raise ValueError(f"checkpoint {ckpt_path} holds no run config: it was not written by `python -m lossy_memory.train`")
    return OmegaConf.create(checkpoint["run_config"])


def shortened(limit_train_batches: Any, max_steps: Any, fast_dev_run: Any, epochs_done: int | None, max_epochs: Any) -> str | None:
    """Why a run did not train its configured length (a debug run, an unfinished one), or None: the one test that
    decides both whether a run publishes its checkpoint and whether another run may build on it."""
    if fast_dev_run:
        return "fast_dev_run"
    if limit_train_batches not in (None, 1, 1.0):
        return f"limit_train_batches={limit_train_batches}"
    if max_steps not in (None, -1):
        return f"max_steps={max_steps}"
    if max_epochs and max_epochs > 0 and epochs_done is not None and epochs_done < max_epochs:
        return f"stopped after {epochs_done} of {max_epochs} epochs"
    return None


def shortened_run(run_config: DictConfig, checkpoint: dict[str, Any]) -> str | None:
    """``shortened`` for the run that wrote a checkpoint: its stored trainer settings and the epoch it was saved at."""
    trainer = run_config.get("trainer") or {}
    epoch = checkpoint.get("epoch")
    return shortened(trainer.get("limit_train_batches"), trainer.get("max_steps"), trainer.get("fast_dev_run"),
                     None if epoch is None else epoch + 1, trainer.get("max_epochs"))


def provenance_path(artifact: str | Path) -> Path:
    """Where an artifact's provenance record lies: ``<artifact>.json`` beside it (written by PublishCheckpoint)."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def provenance(ckpt_path: str | Path, run_config: DictConfig) -> dict[str, Any]:
    """Where a checkpoint came from: the record PublishCheckpoint wrote beside an artifact (run, commit, figures), or
    what the checkpoint's own config says."""
    path = Path(ckpt_path)
    record = provenance_path(path)
    if record.is_file():
        return {"checkpoint": str(path), **json.loads(record.read_text())}
    return {"checkpoint": str(path), "task_name": run_config.get("task_name"), "seed": run_config.get("seed")}


def load_trained_module(ckpt_path: str | Path, kind: type[L.LightningModule], role: str, how_to_train: str,
                        allow_shortened: bool = False,
                        allow_setting: str = "allow_shortened_checkpoints") -> tuple[L.LightningModule, DictConfig, dict[str, Any]]:
    """The ``kind`` module a checkpoint holds, rebuilt from its stored config with its weights, in eval mode and frozen.

    ``role`` ("teacher", "generator") and ``how_to_train`` (the command making such a checkpoint) go into the errors.
    A checkpoint of a shortened run (``trainer=debug``, unfinished) is refused unless ``allow_shortened`` (the setting
    ``allow_setting`` says so); which checkpoint is used, and its provenance, is logged.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"the {role} checkpoint {path} does not exist: train one with `{how_to_train}` "
                                f"(or point the {role} path at an existing checkpoint)")
    checkpoint = read_checkpoint(path)
    run_config = stored_run_config(path, checkpoint)
    reason = shortened_run(run_config, checkpoint)
    if reason is not None and not allow_shortened:
        raise ValueError(f"the {role} checkpoint {path} comes from a shortened run ({reason}), so results built on it would "
                         f"mislead: train a full one with `{how_to_train}`, or set {allow_setting}=true to use it anyway")
    origin = provenance(path, run_config)
    figures = ", ".join(f"{k} {v:.4g}" for k, v in sorted((origin.get("metrics") or {}).items()) if not k.endswith("_step"))
    rank_zero_info(f"{role}: {path} (from {origin.get('run_dir') or origin.get('task_name')}"
                   f"{', shortened: ' + reason if reason else ''}{'; ' + figures if figures else ''})")
    target = run_config.get("model", {}).get("_target_", "?")
    module = instantiate(run_config.model)
    if not isinstance(module, kind):
        raise ValueError(f"the {role} checkpoint {path} holds a {target}, not a {kind.__name__}: train one with `{how_to_train}`")
    module.load_state_dict(checkpoint["state_dict"])
    module.eval().requires_grad_(False)
    return module, run_config, checkpoint


def stored_buffer(checkpoint: dict[str, Any], run_config: DictConfig, ckpt_path: str | Path) -> ExperienceBuffer:
    """The experience buffer the RecollectionWriter saved in a checkpoint (rank 0's under DDP), rebuilt from its config."""
    states = [state for key, state in checkpoint.get("callbacks", {}).items() if key.startswith("RecollectionWriter")]
    if not states or "buffer" not in run_config:
        raise ValueError(f"checkpoint {ckpt_path} holds no experience buffer: train the generator with callbacks=recollection "
                         "(e.g. +experiment=mnist_generator)")
    buffer = instantiate(run_config.buffer.store)
    buffer.load_state_dict(states[0]["ranks"][0])
    return buffer
