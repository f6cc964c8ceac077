"""Reading what `python -m lossy_memory.train` left in a checkpoint: its config, the trained module, the buffer.

Every checkpoint carries the resolved run config (``run_config``, written by the RunRecord callback), so a module is
rebuilt from the config it was trained with and needs no other file. Errors name the file and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lossy_memory.memory import ExperienceBuffer


def read_checkpoint(ckpt_path: str | Path) -> dict[str, Any]:
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: give the path of a <run dir>/checkpoints/<name>.ckpt")
    return torch.load(path, map_location="cpu", weights_only=True)


def stored_run_config(ckpt_path: str | Path, checkpoint: dict[str, Any] | None = None) -> DictConfig:
    """The training config kept in a checkpoint by the RunRecord callback."""
    checkpoint = read_checkpoint(ckpt_path) if checkpoint is None else checkpoint
    if "run_config" not in checkpoint:
        raise ValueError(f"checkpoint {ckpt_path} holds no run config: it was not written by `python -m lossy_memory.train`")
    return OmegaConf.create(checkpoint["run_config"])


def load_trained_module(ckpt_path: str | Path, kind: type[L.LightningModule], role: str,
                        how_to_train: str) -> tuple[L.LightningModule, DictConfig, dict[str, Any]]:
    """The ``kind`` module a checkpoint holds, rebuilt from its stored config with its weights, in eval mode and frozen.

    ``role`` ("teacher", "generator") and ``how_to_train`` (the command making such a checkpoint) go into the errors.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"the {role} checkpoint {path} does not exist: train one with `{how_to_train}` "
                                f"(or point the {role} path at an existing checkpoint)")
    checkpoint = read_checkpoint(path)
    run_config = stored_run_config(path, checkpoint)
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
