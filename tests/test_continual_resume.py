"""Resume: a continual run killed mid-stream and resumed from its last (mid-epoch) checkpoint ends with the same
accuracy matrix, and the same weights, as the run left alone (deterministic mode, CPU)."""

import json

import lightning as L
import pytest
import torch
from data_formats import write_mnist

from conftest import compose_config
from lossy_memory.train import train

FAST = ["+trainer.enable_progress_bar=false", "callbacks.rich_progress_bar=null", "logger=csv"]
# 3 tasks x 40 examples, batch 10: 12 incoming batches (4 a task); a checkpoint every 2 optimizer steps (1 or 2 a batch)
STREAM = ["+experiment=mnist_split_lifelong", "data.num_tasks=3", "data.batch_size=10", "data.batches_per_step=1", "trainer.deterministic=true",
          "callbacks.model_checkpoint.every_n_train_steps=2",
          "model.eval_batch_size=7"]


class Kill(L.Callback):
    """Dies (as a killed process would, without saving anything) when batch ``at`` of the stream is about to start."""

    def __init__(self, at: int):
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.at:
            raise SystemExit(f"killed at batch {batch_idx}")


def run(overrides, folder, data_dir, kill_at=None, ckpt_path=None):
    cfg = compose_config([*STREAM, *overrides, *FAST, f"paths.data_dir={data_dir}"], folder)
    if ckpt_path is not None:
        cfg.ckpt_path = str(ckpt_path)
    if kill_at is not None:
        import lossy_memory.train as train_module

        build = train_module.build

        def killing_build(cfg):
            datamodule, model, trainer = build(cfg)
            trainer.callbacks.append(Kill(kill_at))
            return datamodule, model, trainer

        train_module.build = killing_build
        try:
            with pytest.raises(SystemExit, match="killed"):
                train(cfg)
        finally:
            train_module.build = build
        return None
    train(cfg)
    return json.loads((folder / "continual.json").read_text())


@pytest.mark.parametrize("memory", [
    ["memory=lossless"],
    ["memory=recollection", "memory.generator.hidden=8", "memory.generator_init=null"],
])
def test_killed_and_resumed_run_ends_like_an_uninterrupted_one(memory, tmp_path, one_thread):
    write_mnist(tmp_path / "data", train_per_class=20, test_per_class=5)
    data = tmp_path / "data"
    whole = run(memory, tmp_path / "whole", data)
    run(memory, tmp_path / "killed", data, kill_at=7)
    checkpoint = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    saved = torch.load(checkpoint, weights_only=False)["continual"]
    assert 4 < saved["stream_position"] < 8 and saved["current_task"] == 1  # taken in the middle of task 1
    assert saved["evaluator"]["matrices"]["agnostic"]["values"][1:].isnan().all()  # task 1's row not yet filled
    resumed = run(memory, tmp_path / "killed", data, ckpt_path=checkpoint)
    assert resumed["accuracy_matrix"] == whole["accuracy_matrix"]
    assert resumed["accuracy_matrix_task_aware"] == whole["accuracy_matrix_task_aware"]
    assert resumed["random_init_accuracy"] == whole["random_init_accuracy"]
    final_whole = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    final_resumed = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    for name, value in final_whole.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, final_resumed[name]), name


def test_resume_refuses_changed_settings_and_goes_on_in_the_checkpoints_run_dir(tmp_path, one_thread):
    write_mnist(tmp_path / "data", train_per_class=20, test_per_class=5)
    data = tmp_path / "data"
    run(["memory=lossless"], tmp_path / "killed", data, kill_at=7)
    checkpoint = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    fresh = tmp_path / "fresh"  # the directory Hydra makes for the resuming command
    (fresh / ".hydra").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"other settings.*memory\.lossless_equivalent: 10 -> 50.*allow_resume_changes=true"):
        run(["memory=lossless", "memory.lossless_equivalent=50"], fresh, data, ckpt_path=checkpoint)
    assert not fresh.exists()  # the refused run left nothing
    (fresh / ".hydra").mkdir(parents=True)
    cfg = compose_config([*STREAM, "memory=lossless", *FAST, f"paths.data_dir={data}", f"ckpt_path={checkpoint}"], fresh)
    train(cfg)
    record = json.loads((tmp_path / "killed" / "continual.json").read_text())  # the run finished where it started
    assert record["metrics"]["finished"] and not fresh.exists()
    first, resumed = tmp_path / "killed" / "csv" / "metrics.csv", list((tmp_path / "killed" / "csv").glob("resumed_*/metrics.csv"))
    assert first.is_file() and len(resumed) == 1  # both parts of the run's log kept


def test_a_damaged_or_foreign_checkpoint_gets_one_clear_message(tmp_path):
    from lossy_memory.checkpoints import read_checkpoint

    (tmp_path / "cut.ckpt").write_bytes(b"PK\x03\x04 not a whole zip")
    with pytest.raises(ValueError, match=r"cut.ckpt cannot be read \(\w+\): it is damaged or not a checkpoint"):
        read_checkpoint(tmp_path / "cut.ckpt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a Lightning checkpoint"):
        read_checkpoint(tmp_path / "other.ckpt")
