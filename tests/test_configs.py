"""Every config composes, the user's command-line forms work, and bad config input fails early and clearly."""

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from conftest import compose_config, hydra_runtime
from lossy_memory.runtime import CONFIG_DIR

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
# Every config group, with what must come with it for the group to be used (groups a model pulls in need that model).
CONTEXT = {"trainer": [], "logger": [], "callbacks": [], "model": [], "net": [], "data": [], "paths": [],
           "classifier": ["model=reasoner"], "strategy": ["model=continual_learner", "data=mnist_split"],
           "memory": ["model=continual_learner", "data=mnist_split"], "distill_source": ["+experiment=mnist_distill"],
           "buffer": ["callbacks=recollection"], "hparams_search": ["+experiment=mnist_compression"]}
GROUP_CHOICES = {group: sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml")) for group in CONTEXT}


def resolved_targets(cfg) -> list[str]:
    """Every interpolation resolved (a dangling one raises) and every ``_target_`` in the config, imported."""
    from hydra._internal.utils import _locate
    from omegaconf import OmegaConf

    targets = []

    def walk(node):
        if isinstance(node, dict):
            if "_target_" in node:
                targets.append(node["_target_"])
                _locate(node["_target_"])  # ImportError / AttributeError when the class is not there
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(OmegaConf.to_container(cfg, resolve=True))
    return targets


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_resolves(experiment, tmp_path):
    with hydra_runtime([f"+experiment={experiment}"]):  # as in a run: an artifact may be named by the data config chosen
        cfg = compose_config([f"+experiment={experiment}"], tmp_path / "run")
        assert cfg.task_name != "train", "an experiment names its task (run directories and W&B runs carry it)"
        targets = resolved_targets(cfg)
    for key in ("data", "model", "trainer"):
        assert cfg[key]["_target_"] in targets
    assert cfg.paths.output_dir == str(tmp_path / "run")


@pytest.mark.parametrize(("group", "choice"), [(g, c) for g, choices in GROUP_CHOICES.items() for c in choices if g != "hydra"])
def test_every_group_choice_composes_resolves_and_names_importable_classes(group, choice, tmp_path):
    cfg = compose_config([*CONTEXT[group], f"{group}={choice}"], tmp_path / "run")
    targets = resolved_targets(cfg)
    if group == "hparams_search":
        assert cfg.optimized_metric, "a search names the metric it optimises"
    elif group == "paths":
        assert (CONFIG_DIR.parent / "conf").samefile(CONFIG_DIR) and cfg.paths.root_dir == str(CONFIG_DIR.parent)
    elif group == "distill_source":  # plain settings that the distiller's config reads
        assert (cfg.model.source, cfg.model.targets) == (cfg.distill_source.source, cfg.distill_source.targets)
    elif choice != "none":
        node = cfg[group]
        assert node.get("_target_") in targets or any(isinstance(v, dict) or hasattr(v, "keys") for v in node.values())


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
