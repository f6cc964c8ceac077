"""Sweeps and scale: jobs in parallel on one machine (joblib), through submitit (as on SLURM), Optuna studies, and
multi-node DDP ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def sweep_two_jobs(launcher: list[str], data_dir, tmp_path, threads: str | None = None):
    """A 2-job compression sweep (c=4 and c=8, a few debug steps) through ``launcher``, into the sweep folder the
    default config names: (the jobs' run.json, their results.json, the process result), after checking both jobs
    landed in that one folder and each finished with its own c."""
    env = {"LOSSY_MEMORY_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)} | ({"OMP_NUM_THREADS": threads} if threads else {})
    args = ["-m", "+experiment=mnist_compression", "trainer=debug", "model.latent.c=4,8", "callbacks.rich_progress_bar=null", *launcher,
            f"paths.log_dir={tmp_path / 'outputs'}"]
    result = subprocess.run([sys.executable, "-m", "lossy_memory.train", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    # one folder for the sweep, whichever process ran each job (the sweep folder's name is resolved once)
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    runs = [json.loads((sweep / str(k) / "run.json").read_text()) for k in (0, 1)]
    results = [json.loads((sweep / str(k) / "results.json").read_text()) for k in (0, 1)]
    assert [r["storage"]["bits_per_item"] for r in runs] == [4, 8] and all("test/distortion" in r["metrics"] for r in results)
    return runs, results, result


def test_a_multirun_runs_its_jobs_in_parallel_with_the_cores_shared_out(real_data_dir, tmp_path):
    runs, results, result = sweep_two_jobs(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], real_data_dir, tmp_path)
    assert all(r["torch_threads"] == max(1, (os.cpu_count() or 1) // 2) for r in runs)  # 2 jobs share the cores
    assert max(r["started"] for r in runs) < min(r["finished"] for r in results)  # the two jobs trained at the same time
    assert "Tip:" not in result.stderr and "LeafSpec" not in result.stderr  # the workers are as quiet as a single run


def test_the_slurm_launcher_composes_with_the_clusters_settings(tmp_path):
    from hydra import compose, initialize_config_dir

    from lossy_memory.runtime import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "+experiment=mnist_split_lifelong"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node, launcher.array_parallelism) == ("gpu", 1, 64)


def test_submitits_local_executor_runs_a_two_job_sweep_end_to_end(real_data_dir, tmp_path):
    """The submitit path a SLURM sweep takes (pickled job, its own process, results collected), on this machine."""
    sweep_two_jobs(["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"], real_data_dir, tmp_path, threads="1")


def test_an_optuna_search_runs_its_trials_and_stores_them_in_a_study(real_data_dir, tmp_path):
    import optuna
    import yaml

    sweep, log_dir = tmp_path / "sweep", tmp_path / "outputs"
    env = {"LOSSY_MEMORY_DATA_DIR": str(real_data_dir), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    args = ["+experiment=mnist_compression", "hparams_search=mnist_compression_optuna", "hydra.sweeper.n_trials=3", "trainer=debug",
            "callbacks.rich_progress_bar=null", f"paths.log_dir={log_dir}", f"hydra.sweep.dir={sweep}"]
    result = subprocess.run([sys.executable, "-m", "lossy_memory.train", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="mnist_compression", storage=f"sqlite:///{log_dir / 'optuna' / 'mnist_compression.db'}")
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert len({t.params["model.optimizer.lr"] for t in trials}) == 3 and all(1e-5 <= t.params["model.optimizer.lr"] <= 1e-2 for t in trials)
    for k, trial in enumerate(trials):  # trial k is job k: it ran with the trial's settings and the study holds its result
        config = yaml.safe_load((sweep / str(k) / "config.yaml").read_text())["model"]
        assert (config["optimizer"]["lr"], config["kl_weight"], config["latent"]["tau"]) == pytest.approx(
            (trial.params["model.optimizer.lr"], trial.params["model.kl_weight"], trial.params["model.latent.tau"]))
        assert trial.value == pytest.approx(json.loads((sweep / str(k) / "results.json").read_text())["metrics"]["train/distortion"])
    assert yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_value"] == pytest.approx(study.best_value)


def test_the_continual_optuna_search_sweeps_keys_the_recollection_run_has(tmp_path):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from lossy_memory.runtime import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", ["+experiment=mnist_split_lifelong", "memory=recollection", "hparams_search=mnist_split_optuna"],
                      return_hydra_config=True)
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.optimized_metric == "cl/final_average_accuracy"
    for key in cfg.hydra.sweeper.params:  # a misspelt key would fail every trial only once the study had started
        assert OmegaConf.select(cfg, key, default="missing") != "missing", key


def test_the_recollection_levers_grid_toggles_the_streams_transfer_generator(tmp_path):
    """24 jobs (transfer or not x 1 or 2 generator updates x N = 1 or 3 x 3 seeds); a job with transfer starts from the
    stream's own transfer generator, the others from random weights."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from lossy_memory.runtime import CONFIG_DIR

    base = ["+experiment=omniglot_lifelong", "memory=recollection", "memory.lossless_equivalent=10"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", [*base, "hparams_search=recollection_levers"], return_hydra_config=True)
        parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()])
        (jobs,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
        assert len(jobs) == 24
        inits = {compose("train", [*base, *job]).memory.generator_init for job in jobs[::3]}
    assert {None if i is None else tuple(i.rsplit("/", 2)[-2:]) for i in inits} == {None, ("transfer", "mnist_c46_l2_h32.ckpt")}


LAUNCHERS = {  # what each sets for process 3 of 4 (2 nodes x 2 devices)
    "SLURMEnvironment": {"SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
                         "SLURM_JOB_NAME": "lossy", "SLURM_JOB_ID": "123", "SLURM_NODELIST": "node[1-2]"},
    "TorchElasticEnvironment": {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "GROUP_RANK": "1", "TORCHELASTIC_RUN_ID": "lossy",
                                "MASTER_ADDR": "node1", "MASTER_PORT": "29500"},
}


@pytest.mark.parametrize("environment", sorted(LAUNCHERS))
def test_a_multinode_ddp_run_takes_its_ranks_from_slurm_or_torchrun(environment, tmp_path, monkeypatch):
    from hydra.utils import instantiate

    from conftest import compose_config

    from lightning.pytorch.utilities import rank_zero_only

    for name, value in LAUNCHERS[environment].items():
        monkeypatch.setenv(name, value)
    # the Trainer makes this process rank 3 for rank_zero_only: undone afterwards, or later runs in this process write nothing
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    cfg = compose_config(["+experiment=mnist_compression", "trainer=ddp_multinode", "trainer.accelerator=cpu", "trainer.devices=2"],
                         tmp_path / "run")
    trainer = instantiate(cfg.trainer)
    assert type(trainer.strategy.cluster_environment).__name__ == environment
    assert (trainer.num_nodes, trainer.world_size, trainer.global_rank, trainer.node_rank, trainer.local_rank) == (2, 4, 3, 1, 1)


def test_parallel_jobs_share_the_cores_and_spread_over_the_gpus(monkeypatch, tmp_path):
    """What a job of a parallel sweep sets on a machine with more cores and GPUs than this one: its share of the
    cores (16 cores, 4 jobs at a time: 4 threads) and, on 4 GPUs, GPU k mod 4 for job k."""
    import torch
    from omegaconf import OmegaConf

    from lossy_memory.train import set_cpu_threads, spread_over_gpus

    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    threads = torch.get_num_threads()
    try:
        set_cpu_threads(OmegaConf.create({"cpu_threads": None, "trainer": {"accelerator": "cpu"}}), jobs=(4, 0))
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(threads)
    placed = []
    for job in (1, 6):
        cfg = OmegaConf.create({"trainer": {"accelerator": "gpu", "devices": 1}})
        spread_over_gpus(cfg, (4, job))
        placed.append(list(cfg.trainer.devices))
    assert placed == [[1], [2]]
    ddp = OmegaConf.create({"trainer": {"accelerator": "gpu", "devices": 2}})
    spread_over_gpus(ddp, (4, 3))
    assert ddp.trainer.devices == 2  # a job that asks for several devices keeps its own choice
