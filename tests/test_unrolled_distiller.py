"""UnrolledDatasetDistiller: positive step sizes, the unrolled meta-gradient against finite differences, inits, errors."""

from __future__ import annotations

import csv
import functools
import json

import pytest
import torch

from conftest import compose_config
from lossy_memory.memory.synthetic import load_synthetic_set
from lossy_memory.models.unrolled_distiller import UnrolledDatasetDistiller, initial_params, inverse_softplus
from lossy_memory.nets import MLP, LeNet5

TINY = functools.partial(MLP, hidden=[3])


def tiny_distiller(**kwargs) -> UnrolledDatasetDistiller:
    settings = dict(images_per_class_per_step=1, steps=2, epochs=2, init_lr=0.1, seed=0)
    settings.update(kwargs)
    return UnrolledDatasetDistiller(TINY, (1, 2, 2), 2, mean=(0.0,), std=(1.0,), **settings)


def test_learning_rates_stay_positive_through_softplus():
    model = tiny_distiller(init_lr=0.02)
    torch.testing.assert_close(model.learning_rates, torch.full((4,), 0.02))
    assert inverse_softplus(0.02) < 0
    with torch.no_grad():
        model.raw_lrs.copy_(torch.tensor([-50.0, -5.0, 0.0, 5.0]))
    assert (model.learning_rates > 0).all()


def test_meta_gradient_matches_finite_differences(one_thread):
    torch.manual_seed(0)
    model = tiny_distiller().double()
    x, y = torch.randn(6, 1, 2, 2, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1, 0])
    loss = model.meta_loss(x, y)
    image_grad, lr_grad = torch.autograd.grad(loss, [model.images, model.raw_lrs])
    eps = 1e-6

    def perturbed(tensor, index, delta):
        with torch.no_grad():
            tensor[index] += delta
        value = model.meta_loss(x, y).item()
        with torch.no_grad():
            tensor[index] -= delta
        return value

    for tensor, grad, index in ((model.images, image_grad, (1, 0, 0, 1, 0)), (model.images, image_grad, (0, 1, 0, 0, 1)),
                                (model.raw_lrs, lr_grad, (0,)), (model.raw_lrs, lr_grad, (3,))):
        numeric = (perturbed(tensor, index, eps) - perturbed(tensor, index, -eps)) / (2 * eps)
        assert grad[index].item() == pytest.approx(numeric, rel=1e-4, abs=1e-8)
    assert lr_grad.abs().sum() > 0


def test_unroll_takes_steps_x_epochs_gradient_steps_with_the_learned_rates():
    model = tiny_distiller(steps=1, epochs=1)
    theta0 = model.fixed_theta0()
    after = model.unroll(theta0, create_graph=False)
    params = {k: v.clone().requires_grad_(True) for k, v in theta0.items()}
    loss = torch.nn.functional.cross_entropy(torch.func.functional_call(model.net, params, (model.images[0],)), model.labels)
    grads = torch.autograd.grad(loss, list(params.values()))
    for (name, p), g in zip(params.items(), grads):
        torch.testing.assert_close(after[name], (p - model.learning_rates[0] * g).detach())


def test_fixed_init_reuses_theta0_and_random_init_draws_fresh_ones():
    fixed = tiny_distiller(init="fixed")
    first = {k: v.clone() for k, v in fixed.fixed_theta0().items()}
    x, y = torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 0, 1])
    assert fixed.meta_loss(x, y).item() == pytest.approx(fixed.meta_loss(x, y).item())
    assert all(torch.equal(first[k], v) for k, v in fixed.fixed_theta0().items())
    random = tiny_distiller(init="random", inits_per_iteration=2)
    a, b = random.fresh_theta0(), random.fresh_theta0()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert random.meta_loss(x, y).item() != random.meta_loss(x, y).item()


def test_xavier_theta0_matches_the_reference_init_and_default_keeps_the_modules_own():
    torch.manual_seed(0)
    net = LeNet5((1, 28, 28), 10)
    xavier, default = initial_params(net, "xavier"), initial_params(net, "default")
    for name, weight in xavier.items():
        if name.endswith("bias"):
            assert torch.count_nonzero(weight) == 0, name
            assert torch.count_nonzero(default[name]) > 0, name
        elif weight.dim() >= 2:  # Xavier-normal: std sqrt(2 / (fan_in + fan_out))
            fan_out, fan_in = weight.shape[0] * weight[0, 0].numel(), weight.shape[1] * weight[0, 0].numel()
            assert weight.std().item() == pytest.approx((2 / (fan_in + fan_out)) ** 0.5, rel=0.2), name
    # PyTorch's default draws fc1 (400 -> 120) with std 1/sqrt(3 * 400): about half the reference's
    fc1 = next(name for name, w in xavier.items() if w.shape == (120, 400))
    assert default[fc1].std() < 0.6 * xavier[fc1].std()
    with pytest.raises(ValueError, match="weight_init"):
        tiny_distiller(weight_init="orthogonal")


def test_grad_clip_caps_the_joint_norm_of_the_meta_gradient():
    torch.manual_seed(0)
    x, y = torch.randn(6, 1, 2, 2), torch.tensor([0, 1, 0, 1, 1, 0])
    for clip in (None, 1e-4):
        model = tiny_distiller(grad_clip=clip)
        model.meta_loss(x, y).backward()
        raw = torch.cat([model.images.grad.flatten(), model.raw_lrs.grad]).norm()
        assert model.clip_meta_gradient() == pytest.approx(float(raw), rel=1e-5)
        norm = torch.cat([model.images.grad.flatten(), model.raw_lrs.grad]).norm()
        if clip is None:
            assert norm == raw and raw > 1e-4
        else:
            assert norm == pytest.approx(1e-4, rel=1e-3)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="model.grad_clip"):
        tiny_distiller(grad_clip=0.0)
    with pytest.raises(ValueError, match="eval_inits must be >= 5"):
        tiny_distiller(init="random", eval_inits=2)
    with pytest.raises(ValueError, match="model.init"):
        tiny_distiller(init="zeros")
    with pytest.raises(ValueError, match="model.steps"):
        tiny_distiller(steps=0)


@pytest.mark.parametrize("mode", ["fixed", "random"])
def test_dd_experiments_run_end_to_end_and_save_the_replayable_set(mode, real_data_dir, tmp_path, one_thread):
    from lossy_memory.train import train

    cfg = compose_config([f"+experiment=mnist_dd_{mode}", f"paths.data_dir={real_data_dir}", "trainer.max_epochs=1",
                          "trainer.limit_train_batches=2", "model.steps=2", "model.epochs=1", "model.eval_inits=5",
                          "model.inits_per_iteration=1", "data.batch_size=64", "data.eval_batch_size=5000",
                          "classifier=mlp", "classifier.hidden=[32]"], tmp_path / "run")
    metrics = train(cfg)
    accuracies = json.loads((tmp_path / "run" / "synthetic" / "evaluation.json").read_text())["accuracies"]  # one per evaluation init
    count = 1 if mode == "fixed" else 5  # a fixed init is evaluated from its one start; random ones from 5 fresh draws
    assert len(accuracies) == count and metrics["test/accuracy"] == pytest.approx(sum(accuracies) / count)
    synthetic = load_synthetic_set(tmp_path / "run" / "synthetic" / "synthetic_set.pt", (1, 28, 28), 10)
    assert synthetic.images.shape == (20, 1, 28, 28) and synthetic.labels.tolist() == list(range(10)) * 2
    assert synthetic.learning_rates.shape == (2,) and (synthetic.learning_rates > 0).all()
    assert ("theta0" in synthetic.extras) == (mode == "fixed")
    assert metrics["test/accuracy_std"] == 0 if mode == "fixed" else metrics["test/accuracy_std"] > 0
    from lossy_memory.report import condensation
    from lossy_memory.report.runs import collect

    condensation.table(collect([tmp_path / "run"]), tmp_path)
    (row,) = csv.DictReader((tmp_path / "condensation.csv").open())
    assert (row["method"], row["images_per_class"], row["evaluated_on"], row["networks"]) == (f"dataset distillation ({mode} init)", "2", "MLP", str(count))
    assert float(row["accuracy"]) == pytest.approx(100 * metrics["test/accuracy"])
