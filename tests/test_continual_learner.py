"""The continual learner end to end: a few tasks of real split MNIST fill an accuracy matrix of the right shape and
write it with the run; recollection replay stores more items in the same bits; bad input fails before training."""

import json
import math

import pytest
import torch
from data_formats import write_cifar100
from hydra.utils import instantiate

from conftest import compose_config
from lossy_memory.train import train

FAST = ["+trainer.enable_progress_bar=false", "callbacks.rich_progress_bar=null", "logger=csv"]


def run(overrides, tmp_path, data_dir):
    cfg = compose_config([*overrides, *FAST, f"paths.data_dir={data_dir}"], tmp_path / "run")
    return train(cfg), tmp_path / "run"


def test_split_mnist_fills_the_accuracy_matrix_and_saves_it(real_data_dir, tmp_path, one_thread):
    metrics, run_dir = run(["+experiment=mnist_split_lifelong", "data.num_tasks=3", "data.batch_size=100",
                            "model.eval_max_examples=400"], tmp_path, real_data_dir)
    record = json.loads((run_dir / "continual.json").read_text())
    R = torch.tensor(record["accuracy_matrix"], dtype=torch.float64)
    aware = torch.tensor(record["accuracy_matrix_task_aware"], dtype=torch.float64)
    assert R.shape == aware.shape == (3, 3) and not R.isnan().any()
    assert (aware >= R - 1e-9).all()  # restricting to the task's classes can only help
    assert R[0, 0] > 0.9 and R[1, 1] > 0.8  # each new pair of digits is learnt
    assert R[0, 1] == 0.0  # class-incremental: digits 2 and 3 are never predicted before they are seen
    assert len(record["random_init_accuracy"]) == 3
    assert metrics["cl/final_average_accuracy"] == pytest.approx(float(R[-1].mean()))
    assert metrics["cl/tasks_trained"] == 3 and metrics["cl/storage_memory_items"] == 10
    assert metrics["cl/storage_memory_bits"] == 10 * (784 * 8 + 16) and metrics["cl/wall_time_s"] > 0 and metrics["cl/peak_memory_mb"] > 0
    for name in ("accuracy_matrix.csv", "accuracy_matrix.png", "accuracy_matrix_task_aware.csv", "accuracy_matrix_task_aware.png"):
        assert (run_dir / name).stat().st_size > 0
    rows = (run_dir / "accuracy_matrix.csv").read_text().splitlines()
    assert rows[0] == "trained_through,task0,task1,task2" and len(rows) == 4
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert torch.equal(checkpoint["continual"]["evaluator"]["matrices"]["agnostic"]["values"], R)
    # the optimizers are stepped directly (plain precision, one device) but every step still counts in global_step
    assert checkpoint["global_step"] == checkpoint["continual"]["stream_position"] > 100
    assert "memory._extra_state" in checkpoint["state_dict"]


def test_a_stream_cut_short_says_so_and_reports_no_final_figure(real_data_dir, tmp_path, one_thread, capsys):
    metrics, run_dir = run(["+experiment=mnist_split_lifelong", "data.batch_size=100", "+trainer.limit_train_batches=2",
                            "model.eval_max_examples=100"], tmp_path, real_data_dir)
    text = (run_dir / "continual.json").read_text()
    record = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in continual.json: not JSON"))
    assert record["metrics"]["finished"] is False and record["metrics"]["tasks_trained"] == 1
    assert "final_average_accuracy" not in record["metrics"] and "cl/final_average_accuracy" not in metrics
    assert record["metrics"]["seen_tasks_accuracy"] == pytest.approx(record["accuracy_matrix"][0][0])
    assert record["metrics"]["forgetting"] is None  # undefined for one task: null, not NaN
    assert record["setting"] == {"strategy": "ExperienceReplay", "memory": "lossless memory, 10 items in 62,880 bits"}
    out = capsys.readouterr().out
    assert "the stream did not finish: 1 of 5 tasks trained" in out and f"Results of {run_dir}" in out
    results = json.loads((run_dir / "results.json").read_text(), parse_constant=lambda name: pytest.fail(f"{name} in results.json"))
    assert results["metrics"]["cl/seen_tasks_accuracy"] == pytest.approx(record["metrics"]["seen_tasks_accuracy"])
    stored = json.loads((run_dir / "run.json").read_text())["storage"]  # written as the run ends: what it stores then
    assert stored["memory_items"] == record["metrics"]["storage_memory_items"] == 10


@pytest.mark.slow  # about 15 s: the DiscreteVAE trains online
def test_recollection_replay_keeps_more_items_in_the_same_bits(real_data_dir, tmp_path, one_thread):
    metrics, run_dir = run(["+experiment=mnist_split_lifelong", "memory=recollection", "data.num_tasks=2", "data.batch_size=500",
                            "strategy.replay_size=20", "memory.generator_replay_size=20",
                            "model.eval_max_examples=200", "memory.generator.hidden=8", "memory.generator.latent.c=38",
                            "memory.generator.latent.l=2", "memory.generator_init=null"], tmp_path, real_data_dir)
    budget = 10 * (784 * 8 + 16)
    assert metrics["cl/storage_budget_bits"] == budget
    assert metrics["cl/storage_memory_items"] == budget // (38 + 16)  # one bitstream: no per-item padding
    assert metrics["cl/storage_memory_bits"] <= budget
    assert metrics["cl/storage_generator_parameter_bits"] > 0
    assert metrics["cl/storage_total_bits"] == metrics["cl/storage_memory_bits"] + metrics["cl/storage_generator_parameter_bits"]
    assert not math.isnan(metrics["cl/final_average_accuracy"])


def test_condensed_replay_keeps_condensed_images_of_every_seen_class(real_data_dir, tmp_path, one_thread):
    metrics, run_dir = run(["+experiment=mnist_split_lifelong", "strategy=condensed_replay", "data.num_tasks=2", "data.batch_size=100",
                            "strategy.condenser.iterations=2", "strategy.condenser.outer_loop=2", "strategy.condenser.inner_loop=1",
                            "model.eval_max_examples=400"], tmp_path, real_data_dir)
    assert metrics["cl/storage_memory_items"] == 8  # 10 images' bits: 2 per digit of the 2 tasks' 4
    assert metrics["cl/storage_memory_bits"] == 8 * (784 * 8 + 16)
    R = torch.tensor(json.loads((run_dir / "continual.json").read_text())["accuracy_matrix"])
    assert R[0, 0] > 0.9 and R[1, 0] > 0.3  # replaying task 0's condensed digits keeps them (fine-tuning forgets: ~0)


@pytest.mark.parametrize(("overrides", "message"), [
    (["strategy=icarl", "memory.layout=shared"], "disjoint classes"),
    (["memory.lossless_equivalent=null", "memory.budget_bits=1000"], "holds no lossless item"),
    (["strategy.steps=0"], "steps"),
    (["model.num_classes=5"], "model.num_classes=10"),
    (["trainer.max_epochs=2"], "seen once"),
])
def test_bad_input_fails_before_training(overrides, message, real_data_dir, tmp_path, one_thread):
    with pytest.raises(Exception) as caught:
        run(["+experiment=mnist_permuted_lifelong", "data.num_tasks=2", "data.samples_per_task=50", *overrides], tmp_path, real_data_dir)
    error = caught.value
    while not isinstance(error, ValueError) and error.__cause__ is not None:  # Hydra wraps errors raised by instantiate
        error = error.__cause__
    assert isinstance(error, ValueError) and message in str(error), repr(caught.value)
    assert not (tmp_path / "run" / "continual.json").exists()


@pytest.mark.parametrize(("experiment", "strategy"), [
    *[("mnist_split_lifelong", s) for s in ("finetune", "replay", "gem", "agem", "derpp", "icarl", "condensed_replay")],
    ("mnist_permuted_lifelong", "gem"), ("omniglot_lifelong", "replay"), ("cifar100_lifelong", "replay"),
])
def test_strategies_and_experiments_build(experiment, strategy, tmp_path):
    overrides = [f"+experiment={experiment}", f"strategy={strategy}"]
    if experiment in ("omniglot_lifelong", "cifar100_lifelong"):
        # the recollection memory's DiscreteVAE, small for the test, from random weights (no transfer generator here)
        overrides += ["memory.generator.hidden=4", "memory.generator_init=null"]
    cfg = compose_config(overrides, tmp_path / "run")
    model = instantiate(cfg.model)
    assert model.net.num_classes == cfg.model.num_classes
    assert (model.memory is None) == (strategy == "finetune")
    assert (model.generator is not None) == (experiment in ("omniglot_lifelong", "cifar100_lifelong"))


@pytest.mark.slow
def test_cifar100_lifelong_runs_on_cifar_format_files(tmp_path, one_thread):
    write_cifar100(tmp_path / "data")
    metrics, run_dir = run(["+experiment=cifar100_lifelong", "data.num_tasks=3", "data.download=false", "memory.generator.latent.c=48",
                            "memory.generator.latent.l=2"],
                           tmp_path, tmp_path / "data")
    R = torch.tensor(json.loads((run_dir / "continual.json").read_text())["accuracy_matrix"])
    assert R.shape == (3, 3) and not R.isnan().any()
    assert metrics["cl/storage_budget_bits"] == 200 * (3 * 32 * 32 * 8 + 16)
    assert metrics["cl/storage_memory_items"] == 30  # every example of the 3 small tasks fits as 48-bit recollections


@pytest.mark.parametrize("memory", [["memory=lossless"], ["memory=recollection", "memory.generator.hidden=8", "memory.generator_init=null",
                                                          "memory.generator.latent.c=38", "memory.generator.latent.l=2",
                                                          # the generator's and the classifier's losses each leave the other's
                                                          # parameters unused, which DDP must be told
                                                          "trainer.strategy=ddp_find_unused_parameters_true"]])
def test_under_ddp_the_processes_share_the_runs_budget(memory, tmp_path):
    """Two CPU processes: each keeps half the run's bits, and what the run reports is their sum, within the budget."""
    import subprocess
    import sys

    from data_formats import write_mnist

    write_mnist(tmp_path / "data", train_per_class=20, test_per_class=5)
    args = ["+experiment=mnist_split_lifelong", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.num_tasks=2",
            "data.batch_size=10", f"paths.data_dir={tmp_path / 'data'}", "data.download=false", "callbacks.rich_progress_bar=null",
            "memory.lossless_equivalent=4", *memory, f"hydra.run.dir={tmp_path / 'run'}"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "lossy_memory.train", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "continual.json").read_text())["metrics"]
    budget = 4 * (784 * 8 + 16)
    assert metrics["storage_budget_bits"] == budget and metrics["storage_memory_bits"] <= budget
    if memory[0] == "memory=lossless":  # each process: half the bits' worth of images (2 of the run's 4)
        assert metrics["storage_memory_items"] == 2 * ((budget // 2) // (784 * 8 + 16)) == 4
    else:  # 232 codes of 54 bits fit each half: both shards' 40 examples are kept, and counted once each
        assert metrics["storage_memory_items"] == 80 and metrics["storage_memory_bits"] == 80 * (38 + 16)
