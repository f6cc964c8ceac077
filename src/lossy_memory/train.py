"""Entry point: ``python -m lossy_memory.train +experiment=<name> [overrides]``.

Instantiates data, model, callbacks, loggers and Trainer from the Hydra config, fits, tests, and returns
the metric named by ``optimized_metric`` so sweepers can optimise it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from lossy_memory.callbacks import RunRecord
from lossy_memory.checkpoints import check_resume
from lossy_memory.runtime import (
    CONFIG_DIR,
    quiet_known_noise,
    register_resolvers,
    remove_fresh_run_dir,
    run_stamp,
    swept_settings,
    user_errors_reported,
)
from lossy_memory.writers import write_json

register_resolvers()
quiet_known_noise()


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    """Instantiate everything and check the data is there and fits the model, before any run output is written."""
    model = instantiate(cfg.model)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    swept = swept_settings()
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values() if c is not None]
    callbacks.append(RunRecord(resolved, cfg.paths.output_dir, swept))
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values() if c is not None]
    for logger in loggers:  # the whole resolved config, so runs can be filtered and grouped by any setting (c, l, seed, lr),
        logger.log_hyperparams({**resolved, "swept": swept} if swept else resolved)  # and a sweep's runs by what it varied
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    return datamodule, model, trainer


def parallel_jobs() -> tuple[int, int] | None:
    """(jobs run at once, this job's number) when this run is a job of a multirun whose launcher runs jobs in parallel
    (``hydra/launcher=joblib``), else None."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    launcher = hydra_cfg.get("launcher") or {}
    if "Joblib" not in str(launcher.get("_target_", "")):
        return None
    n_jobs = int(launcher.get("n_jobs", -1))
    return (os.cpu_count() or 1) if n_jobs < 1 else n_jobs, int(hydra_cfg.job.get("num") or 0)


def set_cpu_threads(cfg: DictConfig, jobs: tuple[int, int] | None = None) -> None:
    """torch's CPU threads: ``cpu_threads`` when set; in a parallel multirun (``jobs``: ``parallel_jobs()``), the cores
    shared out over the jobs run at once; on a GPU run, 1 (the host only feeds the device, and several runs side by side would otherwise each take
    every core); otherwise torch's default."""
    threads = cfg.get("cpu_threads")
    if threads is None and jobs is not None:
        threads = max(1, (os.cpu_count() or 1) // jobs[0])
    if threads is None and str(cfg.trainer.get("accelerator", "cpu")) in ("gpu", "cuda"):
        threads = 1
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"cpu_threads must be an integer >= 1 or null, got {threads!r}")
    torch.set_num_threads(threads)


def spread_over_gpus(cfg: DictConfig, jobs: tuple[int, int] | None) -> None:
    """In a parallel multirun on a machine with several GPUs, job k of a one-device run takes GPU k mod their count."""
    count = torch.cuda.device_count()
    if jobs is None or count < 2 or str(cfg.trainer.get("accelerator")) not in ("gpu", "cuda") or cfg.trainer.get("devices") != 1:
        return
    with open_dict(cfg):
        cfg.trainer.devices = [jobs[1] % count]


def resume_in_its_run_dir(cfg: DictConfig) -> None:
    """With ``ckpt_path``: refuse a checkpoint that cannot be read or was written with other settings (unless
    ``allow_resume_changes``), and continue in the checkpoint's own run directory instead of the new one Hydra made
    under ``paths.log_dir`` (a run directory chosen explicitly elsewhere, ``hydra.run.dir=...``, is kept)."""
    if not cfg.get("ckpt_path"):
        return
    run_dir = check_resume(cfg.ckpt_path, OmegaConf.to_container(cfg, resolve=True), bool(cfg.get("allow_resume_changes")))
    fresh = Path(cfg.paths.output_dir).resolve()
    if run_dir is not None and run_dir.resolve() != fresh and fresh.is_relative_to(Path(cfg.paths.log_dir).resolve()):
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir)
        remove_fresh_run_dir(fresh, cfg.paths.log_dir)
    for logger in (cfg.get("logger") or {}).values():
        if logger is not None and str(logger.get("_target_", "")).endswith("CSVLogger"):
            # Lightning's CSV writer deletes a metrics.csv it finds: the run's first part stays in csv/metrics.csv
            logger.version = f"resumed_{run_stamp()}"


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and test) the configured run; returns every metric logged, as floats."""
    quiet_known_noise()  # again here: a parallel launcher's worker processes do not import this module as __main__
    try:
        jobs = parallel_jobs()
        set_cpu_threads(cfg, jobs)
        spread_over_gpus(cfg, jobs)
        resume_in_its_run_dir(cfg)
        if cfg.get("seed") is not None:
            L.seed_everything(cfg.seed, workers=True)
        datamodule, model, trainer = build(cfg)
    except Exception:
        remove_fresh_run_dir(cfg.paths.output_dir, cfg.paths.log_dir)  # bad input leaves no half-written run behind
        raise
    exit_code = 1
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics = dict(trainer.callback_metrics)
        if cfg.get("test"):
            trainer.test(model, datamodule=datamodule)
            metrics.update(trainer.callback_metrics)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):  # the final figures in the run's summary: what W&B tables and sweeps show
                logger.experiment.summary.update({name: float(value) for name, value in metrics.items()})
        exit_code = 0
    finally:
        finish_wandb_run(trainer, exit_code)
    metrics = {name: float(value) for name, value in metrics.items()}
    if trainer.is_global_zero:
        write_json(Path(cfg.paths.output_dir) / "results.json", {"task_name": cfg.get("task_name"), "metrics": metrics,
                                                                  "finished": time.time()})
        print(summary(metrics, cfg.paths.output_dir), flush=True)
    return metrics


def summary(metrics: dict[str, float], output_dir: str) -> str:
    """The run's results as a user reads them at the end (all of them are in ``results.json``): its final figures (not
    per-step or per-task ones), where its files are and how to resume it; a continual stream cut short says so."""
    lines = [f"Results of {output_dir}:"]
    if metrics.get("cl/finished") == 0.0:
        lines.append(f"  the stream did not finish: {metrics['cl/tasks_trained']:.0f} of {metrics['cl/num_tasks']:.0f} tasks trained, "
                     "so there is no final figure")
    shown = sorted(k for k in metrics if not k.startswith("train/") and "/after_task/" not in k and not k.endswith("_step"))
    width = max((len(k) for k in shown), default=0)
    lines += [f"  {k:<{width}}  {metrics[k]:.6g}" for k in shown]
    last = Path(output_dir) / "checkpoints" / "last.ckpt"
    if last.is_file():
        lines.append(f"To resume or extend it: the same command with ckpt_path={last}")
    return "\n".join(lines)


def finish_wandb_run(trainer: L.Trainer, exit_code: int) -> None:
    """Close the W&B run this job opened. Multirun jobs share one process, and a WandbLogger finding a run still
    open logs into it instead of starting its own, so without this every job of a sweep lands in the first run."""
    if any(isinstance(logger, WandbLogger) for logger in trainer.loggers):
        import wandb

        wandb.finish(exit_code=exit_code)


def optimized_value(metrics: dict[str, float], name: str | None) -> float | None:
    if not name:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric={name!r} was not logged; logged metrics: {sorted(metrics)}")
    return metrics[name]


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
@user_errors_reported
def main(cfg: DictConfig) -> float | None:
    return optimized_value(train(cfg), cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
