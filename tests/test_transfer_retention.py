"""Transfer (a recollection memory's DiscreteVAE initialised from a checkpoint of another run) and long-term
retention (a stream followed by a phase of another dataset, with the retention curve recorded)."""

import json

import pytest
import torch
from data_formats import write_cifar10, write_cifar100
from hydra.utils import instantiate

from conftest import compose_config, hydra_runtime
from lossy_memory.checkpoints import read_checkpoint
from lossy_memory.train import train

FAST = ["+trainer.enable_progress_bar=false", "callbacks.rich_progress_bar=null", "logger=csv"]


def root_error(error: BaseException) -> BaseException:
    while not isinstance(error, ValueError) and error.__cause__ is not None:  # Hydra wraps errors raised by instantiate
        error = error.__cause__
    return error


@pytest.fixture(scope="module")
def tiny_generator(real_data_dir, tmp_path_factory):
    """A DiscreteVAE (c=8, l=2, hidden 4) trained for 2 steps on MNIST: its last.ckpt."""
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("generator") / "run"
    cfg = compose_config(["+experiment=mnist_compression", "trainer=debug", "trainer.max_steps=2", "model.latent.c=8",
                          "model.latent.l=2", "model.hidden=4", "data.batch_size=20", "data.eval_on_train=false",
                          "callbacks.reconstruction_grid=null", "test=false", *FAST, f"paths.data_dir={real_data_dir}"], run_dir)
    train(cfg)
    return run_dir / "checkpoints" / "last.ckpt"


def learner_config(tmp_path, data_dir, *overrides):
    return compose_config(["+experiment=mnist_split_lifelong", "memory=recollection", "recollection_memory.generator_init=null",
                           "memory.generator.latent.c=8", "memory.generator.latent.l=2",
                           "memory.generator.hidden=4", "data.num_tasks=2", "data.batch_size=100", "model.eval_max_examples=50",
                           *overrides, *FAST, f"paths.data_dir={data_dir}"], tmp_path / "run")


def test_generator_init_loads_the_checkpoint_weights(tiny_generator, real_data_dir, tmp_path, one_thread):
    saved = read_checkpoint(tiny_generator)["state_dict"]
    fresh = instantiate(learner_config(tmp_path, real_data_dir).model).memory.generator.state_dict()
    learner = instantiate(learner_config(tmp_path, real_data_dir, f"memory.generator_init={tiny_generator}").model)
    loaded = learner.memory.generator.state_dict()
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert any(not torch.equal(fresh[k], saved[k]) for k in saved if saved[k].is_floating_point())  # it did change something
    assert all(p.requires_grad for p in learner.memory.generator.parameters())  # still trained online


@pytest.mark.parametrize(("overrides", "message"), [
    (["memory.generator.latent.c=16"], "latent c=8, l=2 but the memory's generator has c=16"),
    (["memory.generator.hidden=6"], "layers differ"),
])
def test_a_mismatched_generator_init_fails_before_training(overrides, message, tiny_generator, real_data_dir, tmp_path, one_thread):
    cfg = learner_config(tmp_path, real_data_dir, *overrides, f"memory.generator_init={tiny_generator}")
    with pytest.raises(Exception) as caught:
        train(cfg)
    error = root_error(caught.value)
    assert isinstance(error, ValueError) and message in str(error), repr(caught.value)
    assert not (tmp_path / "run" / "continual.json").exists()


def test_generator_init_without_a_generator_is_refused(tiny_generator, real_data_dir, tmp_path):
    cfg = compose_config(["+experiment=mnist_split_lifelong", "memory=lossless", f"memory.generator_init={tiny_generator}"],
                         tmp_path / "run")
    with pytest.raises(Exception) as caught:
        instantiate(cfg.model)
    assert "memory.kind='lossless' has none" in str(root_error(caught.value))


def test_a_missing_generator_init_names_the_file(real_data_dir, tmp_path):
    cfg = learner_config(tmp_path, real_data_dir, f"memory.generator_init={tmp_path / 'none.ckpt'}")
    with pytest.raises(Exception) as caught:
        instantiate(cfg.model)
    error = caught.value
    while error.__cause__ is not None:
        error = error.__cause__
    assert isinstance(error, FileNotFoundError) and "none.ckpt" in str(error)


def test_long_term_retention_records_the_curve(tmp_path, one_thread):
    write_cifar100(tmp_path / "data")   # 2 train / 1 test image per fine class
    write_cifar10(tmp_path / "data")    # 20 train / 10 test images
    cfg = compose_config(["+experiment=cifar100_long_term_retention", "data.stream.num_tasks=2", "data.stream.download=false",
                          "data.extra.download=false", "data.examples=17", "data.interval=5", "data.batch_size=5",
                          "classifier=mlp", "memory.generator.latent.c=48", "memory.generator.hidden=4", "model.eval_max_examples=null",
                          *FAST, f"paths.data_dir={tmp_path / 'data'}"], tmp_path / "run")
    metrics = train(cfg)
    record = json.loads((tmp_path / "run" / "continual.json").read_text())
    retention = record["retention"]
    assert retention["task"] == 2 and retention["interval"] == 5
    assert retention["examples"] == [5, 10, 15]  # 17 examples in batches of 5, 5, 5, 2: one point per interval
    assert all(0.0 <= a <= 1.0 for a in retention["accuracy"]) and 0.0 <= retention["initial"] <= 1.0
    assert record["task_classes"][2] == list(range(100, 110))  # CIFAR-10 labels offset after CIFAR-100's
    R = torch.tensor(record["accuracy_matrix"])
    assert R.shape == (3, 3) and not R.isnan().any()
    assert retention["initial"] == pytest.approx(float(R[1, :2].mean()))  # right after the CIFAR-100 tasks
    assert metrics["cl/retention_final"] == pytest.approx(retention["accuracy"][-1])
    curve = record["generator_distortion"]  # Figure 3's measure: before training, then at each of the 3 task boundaries (10 + 10 + 17 examples)
    assert curve["examples"] == [0, 10, 20, 37] and all(0.0 < d < 1.0 for d in curve["distortion"])
    rows = (tmp_path / "run" / "retention.csv").read_text().splitlines()
    assert rows[0] == "examples,accuracy" and [r.split(",")[0] for r in rows[1:]] == ["0", "5", "10", "15"]


def test_retention_stream_rejects_an_interval_beyond_the_phase(tmp_path):
    cfg = compose_config(["+experiment=cifar100_long_term_retention", "data.examples=10", "data.interval=20"], tmp_path / "run")
    with pytest.raises(Exception) as caught:
        instantiate(cfg.data)
    assert "data.interval=20 exceeds data.examples=10" in str(root_error(caught.value))


def test_the_lifelong_experiments_start_recollections_from_their_transfer_generators(real_data_dir, tmp_path, one_thread):
    """`+experiment=transfer_generator` on the Omniglot subset publishes transfer/omniglot_small_c<c>_l<l>_h<filters>.ckpt,
    and split MNIST's recollection memory of that size starts from its weights; a lossless memory takes none, and a
    size with no generator trained is refused with the command that trains it."""
    artifacts = tmp_path / "artifacts"
    overrides = ["+experiment=transfer_generator", "data=omniglot_small", "model.latent.c=8", "model.hidden=4", "trainer.max_epochs=1",
                 "data.batch_size=500", *FAST, f"paths.data_dir={real_data_dir}", f"paths.artifact_dir={artifacts}"]
    with hydra_runtime(overrides):  # the artifact is named by the data config chosen, as in a run
        train(compose_config(overrides, tmp_path / "generator"))
    published = artifacts / "transfer" / "omniglot_small_c8_l2_h4.ckpt"
    weights = read_checkpoint(published)["state_dict"]
    stream = ["+experiment=mnist_split_lifelong", "memory=recollection", "memory.generator.latent.c=8", "memory.generator.latent.l=2",
              "memory.generator.hidden=4", f"paths.data_dir={real_data_dir}", f"paths.artifact_dir={artifacts}"]
    learner = instantiate(compose_config(stream, tmp_path / "run").model)
    assert learner.memory.online.init == str(published)
    for name, value in learner.memory.generator.state_dict().items():
        assert torch.equal(value, weights[name]), name
    lossless = compose_config(["+experiment=mnist_split_lifelong", "memory=lossless", f"paths.artifact_dir={artifacts}"], tmp_path / "run")
    assert lossless.memory.generator_init is None
    with pytest.raises(Exception) as caught:
        instantiate(compose_config([*stream, "memory.generator.hidden=6"], tmp_path / "run").model)
    assert "omniglot_small_c8_l2_h6.ckpt does not exist" in str(caught.value) and "model.hidden=6" in str(caught.value)
