"""Entry point: ``python -m lossy_memory.evaluate ckpt_path=<run>/checkpoints/last.ckpt``.

Rebuilds the datamodule and model from the resolved config that ``lossy_memory.train`` stored inside the
checkpoint, restores the weights and runs the test stage; metrics go to ``metrics.json`` in the run directory.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lossy_memory.checkpoints import stored_run_config
from lossy_memory.runtime import CONFIG_DIR, quiet_known_noise, register_resolvers, user_errors_reported
from lossy_memory.writers import write_json

register_resolvers()
quiet_known_noise()


def evaluate(cfg: DictConfig) -> dict[str, float]:
    run_cfg = stored_run_config(cfg.ckpt_path)
    data_cfg = OmegaConf.merge(run_cfg.data, cfg.data, {"data_dir": cfg.paths.data_dir})
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(data_cfg)
    model = instantiate(run_cfg.model)
    trainer = instantiate(cfg.trainer)
    trainer.test(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "metrics.json", {"ckpt_path": str(cfg.ckpt_path), "metrics": metrics})
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
@user_errors_reported
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
