"""Generative distillation on real MNIST, end to end through the user's configs: teacher and generator are trained for a
few steps, published as artifacts, and loaded by the distiller; bad inputs fail before any training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from lossy_memory.checkpoints import read_checkpoint
from lossy_memory.models import GenerativeDistiller
from lossy_memory.train import train

from conftest import compose_config


@pytest.fixture(scope="module")
def artifacts(real_data_dir, tmp_path_factory) -> Path:
    """A teacher and a c=8 generator whose buffer holds the codes of 300 training images, in <tmp>/artifacts."""
    root = tmp_path_factory.mktemp("distill")
    force = "callbacks.publish_checkpoint.force=true"  # debug runs publish only when told to
    train(compose_config(["+experiment=mnist_teacher", "trainer=debug", force], root / "teacher"))
    train(compose_config(["+experiment=mnist_generator", "model.latent.c=8", "trainer=debug", "trainer.max_steps=-1", force],
                         root / "generator"))
    return root / "artifacts"


def distill_config(artifacts: Path, run_dir: Path, *overrides: str):
    return compose_config(["+experiment=mnist_distill", "generator_c=8", "model.max_episodes=30", "model.eval_episodes=[10,30]",
                           "+trainer.limit_test_batches=1", f"paths.artifact_dir={artifacts}",
                           "model.allow_shortened_checkpoints=true", *overrides], run_dir)


def test_artifacts_hold_a_teacher_and_a_generator_with_its_buffer(artifacts):
    assert (artifacts / "mnist_teacher.ckpt").is_file()
    checkpoint = read_checkpoint(artifacts / "mnist_generator_c8_l2.ckpt")
    (writer_state,) = [v for k, v in checkpoint["callbacks"].items() if k.startswith("RecollectionWriter")]
    assert writer_state["ranks"][0]["num_seen"] == 300  # 3 batches of 100 on the last (only) epoch


@pytest.mark.parametrize("source", ["buffer_sampling", "lossless_1", pytest.param("active_diverse", marks=pytest.mark.slow),
                                    pytest.param("real", marks=pytest.mark.slow)])
def test_distillation_runs_and_records_the_accuracy_curve(artifacts, tmp_path, source):
    run_dir = tmp_path / source
    metrics = train(distill_config(artifacts, run_dir, f"distill_source={source}"))
    record = json.loads((run_dir / "distillation.json").read_text())
    assert record["episodes"] == 30 and set(record["accuracy_at"]) == {"10", "30"}
    assert all(0 <= a <= 1 for a in record["accuracy_at"].values())
    assert metrics["test/accuracy@30"] == pytest.approx(record["accuracy_at"]["30"])
    if source in ("buffer_sampling", "active_diverse"):
        # Total storage as in the paper: 300 stored items (8 code bits, a uint8 label and a uint8 task id), plus the
        # generator's parameters.
        generator = read_checkpoint(artifacts / "mnist_generator_c8_l2.ckpt")["state_dict"]
        parameter_bits = 32 * sum(t.numel() for t in generator.values() if t.is_floating_point())
        assert record["storage/buffer_bits"] == 300 * (8 + 16)
        assert record["storage/total_bits"] == 300 * 24 + parameter_bits
    if source == "lossless_1":
        assert record["storage/items"] == 500  # 1% of the 50,000 training images
        assert record["storage/total_bits"] == 500 * (784 * 8 + 16)


def test_active_sampling_keeps_the_candidates_student_and_teacher_disagree_on_most(artifacts, tmp_path):
    cfg = distill_config(artifacts, tmp_path, "distill_source=active")
    model: GenerativeDistiller = instantiate(cfg.model)
    torch.manual_seed(0)
    x, teacher_logits, _ = model.student_batch({}, 5)
    assert x.shape == (5, 1, 28, 28) and teacher_logits.shape == (5, 10)
    torch.testing.assert_close(teacher_logits, model.teacher(x))  # targets are the teacher's outputs on what is kept

    def disagreement(images):
        s, t = model.student(images).log_softmax(1), model.teacher(images).log_softmax(1)
        return (t.exp() * (t - s)).sum(1)

    # Each kept item beats a typical random recollection on disagreement (it is the max of 10 candidates).
    with torch.no_grad():
        kept = disagreement(x)
        random = disagreement(model.buffer.decode(model.generator.decode, model.buffer.sample(200).data))
    assert kept.mean() > random.mean()


def test_a_teacher_of_another_label_space_is_refused(artifacts, tmp_path):
    cfg = distill_config(artifacts, tmp_path)
    with open_dict(cfg):
        cfg.model.num_classes = 5
    with pytest.raises(InstantiationException, match="teacher .* has 10 classes but the student and data have 5"):
        instantiate(cfg.model)


def test_a_generator_for_other_images_is_refused(artifacts, tmp_path):
    # A generator checkpoint whose stored config makes 32x32 images (the teacher is fine: it takes 28x28).
    source = read_checkpoint(artifacts / "mnist_generator_c8_l2.ckpt")
    run_config = OmegaConf.create(source["run_config"])
    run_config.model.image_shape = [1, 32, 32]
    generator = instantiate(run_config.model)
    torch.save({**source, "state_dict": generator.state_dict(), "run_config": OmegaConf.to_container(run_config)},
               tmp_path / "gen32.ckpt")
    cfg = distill_config(artifacts, tmp_path, f"model.generator_ckpt={tmp_path / 'gen32.ckpt'}")
    with pytest.raises(InstantiationException, match=r"generator .* makes images of shape \[1, 32, 32\] but the data has \[1, 28, 28\]"):
        instantiate(cfg.model)


def test_an_empty_buffer_is_refused_before_training(artifacts, tmp_path):
    source = read_checkpoint(artifacts / "mnist_generator_c8_l2.ckpt")
    key = next(k for k in source["callbacks"] if k.startswith("RecollectionWriter"))
    run_config = OmegaConf.create(source["run_config"])
    empty = instantiate(run_config.buffer.store).state_dict()
    torch.save({**source, "callbacks": {key: {"ranks": [empty]}}}, tmp_path / "empty.ckpt")
    cfg = distill_config(artifacts, tmp_path / "run", f"model.generator_ckpt={tmp_path / 'empty.ckpt'}")
    (tmp_path / "run").mkdir()  # as Hydra makes it
    with pytest.raises(InstantiationException, match="buffer in .* is empty"):
        train(cfg)
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_a_missing_teacher_names_the_command_that_makes_one(artifacts, tmp_path):
    cfg = distill_config(artifacts, tmp_path, f"model.teacher_ckpt={tmp_path / 'none.ckpt'}")
    with pytest.raises(InstantiationException, match=r"\+experiment=mnist_teacher"):
        instantiate(cfg.model)


def test_code_sampling_cannot_train_on_labels(artifacts, tmp_path):
    cfg = distill_config(artifacts, tmp_path, "distill_source=code_sampling", "distill_source.targets=labels")
    with pytest.raises(InstantiationException, match="no labels"):
        instantiate(cfg.model)


def test_the_candidate_pool_uses_each_candidate_once_and_retires_it_after_pool_factor_steps():
    from lossy_memory.models.generative_distiller import CandidatePool

    drawn = []

    def draw(m):  # candidates numbered in draw order
        ids = torch.arange(len(drawn), len(drawn) + m)
        drawn.extend(ids.tolist())
        return {"ids": ids, "features": None}

    pool, n, seen = CandidatePool(pool_factor=4), 3, []
    born = {}
    for step in range(50):
        pool.fill(draw, n)
        assert len(pool.age) == 12
        for i in pool.items["ids"].tolist():
            born.setdefault(i, step)
            assert step - born[i] < 4  # never scored more than pool_factor steps after it was drawn
        kept = pool.take(torch.tensor([0, 5, 11]))  # the oldest, and two others
        assert kept["features"] is None
        seen.extend(kept["ids"].tolist())
    assert len(seen) == len(set(seen)) == 150  # no candidate is given to the student twice
    assert 12 + 49 * n <= len(drawn) <= 12 + 49 * 2 * n  # per step: the n kept plus at most n retired are redrawn


@pytest.mark.slow
def test_omniglot_distillation_runs_end_to_end_on_the_subset(real_data_dir, tmp_path, one_thread):
    """omniglot_teacher -> omniglot_generator -> omniglot_distill on the 8-alphabet subset, each a few debug steps."""
    if not (real_data_dir / "omniglot-small").is_dir():
        pytest.skip("the Omniglot subset is not under the data root")
    small = ["data=omniglot_small", "trainer=debug", "callbacks.publish_checkpoint.force=true"]
    train(compose_config(["+experiment=omniglot_teacher", *small], tmp_path / "teacher"))
    train(compose_config(["+experiment=omniglot_generator", *small, "model.latent.c=16", "trainer.max_steps=-1"], tmp_path / "generator"))
    artifacts = tmp_path / "artifacts"
    run_dir = tmp_path / "distill"
    train(compose_config(["+experiment=omniglot_distill", "data=omniglot_small", "generator_c=16", "distill_source=active",
                          "model.max_episodes=30", "model.eval_episodes=[10,30]", "+trainer.limit_test_batches=1",
                          "model.allow_shortened_checkpoints=true", f"paths.artifact_dir={artifacts}"], run_dir))
    record = json.loads((run_dir / "distillation.json").read_text())
    assert record["episodes"] == 30 and record["sampling"] == "ActiveSampling"
    assert all(0 <= a <= 1 for a in record["accuracy_at"].values())
    checkpoint = read_checkpoint(artifacts / "omniglot_generator_c16_l2.ckpt")
    (writer_state,) = [v for k, v in checkpoint["callbacks"].items() if k.startswith("RecollectionWriter")]
    assert writer_state["ranks"][0]["num_seen"] > 0 and record["storage/items"] == writer_state["ranks"][0]["num_seen"]


def test_a_debug_run_publishes_nothing_and_a_published_artifact_says_where_it_came_from(artifacts, real_data_dir, tmp_path):
    train(compose_config(["+experiment=mnist_teacher", "trainer=debug", f"paths.artifact_dir={tmp_path / 'artifacts'}"], tmp_path / "t"))
    assert not (tmp_path / "artifacts").exists()  # a debug run leaves the published teacher as it was
    origin = json.loads((artifacts / "mnist_teacher.ckpt.json").read_text())  # the fixture's, published with force=true
    assert origin["shortened"] == "limit_train_batches=3" and Path(origin["run_dir"]).name == "teacher"
    assert "train/loss" in origin["metrics"] and origin["git"]


def test_a_teacher_from_a_shortened_run_is_refused_unless_allowed(artifacts, tmp_path):
    cfg = distill_config(artifacts, tmp_path / "run", "model.allow_shortened_checkpoints=false")
    with pytest.raises(InstantiationException, match=r"teacher checkpoint .* shortened run \(limit_train_batches=3\).*model.allow_shortened_checkpoints=true"):
        train(cfg)
    metrics = train(distill_config(artifacts, tmp_path / "allowed"))
    record = json.loads((tmp_path / "allowed" / "distillation.json").read_text())
    assert record["sources"]["teacher"]["shortened"] == "limit_train_batches=3" and metrics["test/accuracy@30"] >= 0


def test_the_report_reads_what_real_distillation_runs_write(artifacts, tmp_path):
    import csv

    from lossy_memory.report import distillation
    from lossy_memory.report.runs import collect

    accuracies = []
    for seed in (1, 2):
        train(distill_config(artifacts, tmp_path / "sweep" / str(seed), f"seed={seed}"))
        accuracies.append(json.loads((tmp_path / "sweep" / str(seed) / "distillation.json").read_text())["accuracy_at"]["30"])
    distillation.table(collect([tmp_path / "sweep"]), tmp_path)
    (row,) = csv.DictReader((tmp_path / "distillation.csv").open())
    assert row["method"].startswith("buffer sampling, c=8") and (row["seeds"], row["settings"]) == ("2", "")
    assert float(row["30"]) == pytest.approx(100 * (accuracies[0] + accuracies[1]) / 2)
