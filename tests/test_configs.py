"""Every config composes, the user's command-line forms work, and bad config input fails early and clearly."""

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from conftest import compose_config
from lossy_memory.runtime import CONFIG_DIR

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
GROUP_CHOICES = {
    group: sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
    for group in ("trainer", "logger", "callbacks", "model", "net")
}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_resolves(experiment, tmp_path):
    cfg = compose_config([f"+experiment={experiment}"], tmp_path / "run")
    assert cfg.task_name != "train", "an experiment names its task (run directories and W&B runs carry it)"
    for key in ("data", "model", "trainer"):
        assert "_target_" in cfg[key]
    assert cfg.paths.output_dir == str(tmp_path / "run")


@pytest.mark.parametrize(("group", "choice"), [(g, c) for g, choices in GROUP_CHOICES.items() for c in choices])
def test_every_group_choice_composes(group, choice, tmp_path):
    cfg = compose_config([f"{group}={choice}"], tmp_path / "run")
    assert cfg[group] is not None or choice == "none"


def test_user_override_form_reaches_the_model(tmp_path):
    cfg = compose_config(["+experiment=mnist_compression", "model.latent.c=38", "model.latent.l=2", "trainer.max_epochs=3"], tmp_path / "run")
    model = instantiate(cfg.model)
    assert (model.latent.c, model.latent.l) == (38, 2)
    assert model.storage_report()["bits_per_item"] == 38
    assert cfg.trainer.max_epochs == 3


def test_hparams_search_sweeps_and_names_the_metric_it_returns(tmp_path):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", ["+experiment=mnist_compression", "hparams_search=mnist_compression_grid"], return_hydra_config=True)
    assert cfg.optimized_metric == "train/distortion"
    assert set(cfg.hydra.sweeper.params) == {"model.kl_weight", "model.optimizer.lr"}


def test_data_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSY_MEMORY_DATA_DIR", str(tmp_path / "elsewhere"))
    assert compose_config([], tmp_path / "run").paths.data_dir == str(tmp_path / "elsewhere")
    monkeypatch.delenv("LOSSY_MEMORY_DATA_DIR")
    assert compose_config([], tmp_path / "run").paths.data_dir == str(CONFIG_DIR.parent / "data")


def test_unknown_config_names_are_rejected_with_the_available_choices(tmp_path):
    with pytest.raises(ConfigCompositionException, match="mnist_compression"):
        compose_config(["+experiment=mnist_compresion"], tmp_path / "run")
    with pytest.raises(ConfigCompositionException):
        compose_config(["model.latent.cc=3"], tmp_path / "run")


def run_train(args, cwd, env_data_dir, timeout=300):
    env = {"LOSSY_MEMORY_DATA_DIR": str(env_data_dir), "PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-m", "lossy_memory.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(("override", "message"), [("model.latent.c=0", "latent.c must be an integer >= 1"), ("model.latent.l=1", "latent.l must be an integer >= 2")])
def test_bad_latent_sizes_fail_before_anything_is_written(override, message, tmp_path):
    run_dir = tmp_path / "outputs" / "runs" / "bad"
    result = run_train(["+experiment=mnist_compression", override, f"hydra.run.dir={run_dir}", f"paths.log_dir={tmp_path / 'outputs'}"], tmp_path, tmp_path / "no-data")
    assert result.returncode != 0
    assert message in result.stderr
    assert not run_dir.exists(), "a failed start must not leave a half-written run directory"


def test_missing_data_names_the_dataset_and_folder_and_leaves_nothing(tmp_path):
    run_dir = tmp_path / "outputs" / "runs" / "nodata"
    result = run_train(["+experiment=mnist_compression", "data.download=false", f"hydra.run.dir={run_dir}", f"paths.log_dir={tmp_path / 'outputs'}"], tmp_path, tmp_path / "no-data")
    assert result.returncode != 0
    assert "MNIST was not found in" in result.stderr and str(tmp_path / "no-data") in result.stderr
    assert "train-images-idx3-ubyte" in result.stderr
    assert not run_dir.exists()
