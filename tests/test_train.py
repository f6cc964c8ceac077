"""End to end on real MNIST: the user's command trains, logs, checkpoints, reports storage; evaluate reads it back."""

import csv
import json
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import compose_config


def run_module(module, args, cwd, data_dir, timeout=600):
    env = {"LOSSY_MEMORY_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_mnist_compression_end_to_end_then_evaluate(real_data_dir, tmp_path):
    run_dir = tmp_path / "run"
    trained = run_module("lossy_memory.train", ["+experiment=mnist_compression", "trainer=debug", "model.latent.c=38", f"hydra.run.dir={run_dir}"],
                         tmp_path, real_data_dir)

    record = json.loads((run_dir / "run.json").read_text())
    assert record["storage"]["bits_per_item"] == 38
    assert record["storage"]["compression_ratio"] == pytest.approx(784 * 8 / 38)
    assert len(record["git"]["sha"]) in (40, len("unknown"))
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["latent"]["c"] == 38 and config["paths"]["output_dir"] == str(run_dir)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "images").glob("reconstructions_epoch*.png"))

    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    logged = {k for row in rows for k, v in row.items() if v}
    assert {"test/distortion", "train/distortion", "storage/bits_per_item"} <= logged
    assert any(k.startswith("train/loss") for k in logged)
    test_distortion = next(float(r["test/distortion"]) for r in rows if r.get("test/distortion"))
    assert 0 < test_distortion < 0.5
    results = json.loads((run_dir / "results.json").read_text())["metrics"]  # what the console summary shows, as JSON
    assert results["test/distortion"] == pytest.approx(test_distortion) and f"Results of {run_dir}" in trained.stdout
    assert f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}" in trained.stdout  # how to resume it

    eval_dir = tmp_path / "eval"
    run_module("lossy_memory.evaluate", [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "+trainer.limit_test_batches=1", f"hydra.run.dir={eval_dir}"], tmp_path, real_data_dir)
    metrics = json.loads((eval_dir / "metrics.json").read_text())["metrics"]
    # The same weights on the same (first) test batches give the same distortion.
    assert metrics["test/distortion"] == pytest.approx(test_distortion, rel=1e-5)


def test_evaluate_rejects_a_missing_checkpoint(tmp_path, real_data_dir):
    env = {"LOSSY_MEMORY_DATA_DIR": str(real_data_dir), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "lossy_memory.evaluate", f"ckpt_path={tmp_path / 'nope.ckpt'}", f"hydra.run.dir={tmp_path / 'e'}"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "does not exist" in result.stderr


@pytest.mark.parametrize("overrides, expected", [([], None), (["trainer=gpu"], 1), (["cpu_threads=3"], 3), (["trainer=gpu", "cpu_threads=2"], 2)])
def test_cpu_threads_default_to_one_on_a_gpu_run(overrides, expected, tmp_path, one_thread):
    from lossy_memory.train import set_cpu_threads

    torch.set_num_threads(4)
    set_cpu_threads(compose_config(overrides, tmp_path / "run"))
    assert torch.get_num_threads() == (4 if expected is None else expected)


def test_bad_cpu_threads_are_refused(tmp_path):
    from lossy_memory.train import set_cpu_threads

    with pytest.raises(ValueError, match="cpu_threads must be an integer >= 1"):
        set_cpu_threads(compose_config(["cpu_threads=0"], tmp_path / "run"))


def test_third_party_noise_is_silenced_and_real_warnings_are_not(tmp_path):
    script = ("import warnings, lossy_memory.train\n"
              "from lightning.pytorch.utilities import rank_zero_info\n"
              "rank_zero_info('💡 Tip: install something')\n"
              "rank_zero_info('a real message')\n"
              "warnings.warn('`isinstance(treespec, LeafSpec)` is deprecated, use something else')\n"
              "warnings.warn('Using ModelCheckpoint with manual optimization and every_n_train_steps, but no state')\n"
              "warnings.warn('a real warning')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Tip" not in result.stderr and "LeafSpec" not in result.stderr and "ModelCheckpoint" not in result.stderr
    assert "a real message" in result.stderr and "a real warning" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["+experiment=mnist_split_lifelong", "model.num_classes=5"], "error: model.num_classes=5 but the stream split MNIST has 10 classes"),
    (["+experiment=mnist_split_lifelong", "ckpt_path=missing.ckpt"], "error: checkpoint missing.ckpt does not exist"),
])
def test_bad_input_is_one_line_without_traceback_and_leaves_no_run_dir(args, message, real_data_dir, tmp_path):
    env = {"LOSSY_MEMORY_DATA_DIR": str(real_data_dir), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "lossy_memory.train", *args, f"paths.log_dir={tmp_path / 'outputs'}"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(message) and "Traceback" not in result.stderr
    assert not list((tmp_path / "outputs").rglob("*.yaml"))  # no run directory (Hydra's config files) left behind


def test_an_error_wrapped_by_hydra_instantiate_is_one_line_too(real_data_dir, tmp_path):
    env = {"LOSSY_MEMORY_DATA_DIR": str(real_data_dir), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "lossy_memory.train", "+experiment=mnist_split_lifelong", "strategy.steps=0",
                             f"paths.log_dir={tmp_path / 'outputs'}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: strategy.steps (N, updates per incoming batch) must be an integer >= 1")


def test_the_progress_bar_shows_no_negative_epoch_count_without_an_epoch_limit():
    from types import SimpleNamespace

    from lossy_memory.callbacks import ProgressBar

    bar = ProgressBar()
    for max_epochs, expected in ((-1, "Epoch 3"), (10, "Epoch 3/9")):
        bar._trainer = SimpleNamespace(max_epochs=max_epochs)
        assert bar._get_train_description(3).strip() == expected
