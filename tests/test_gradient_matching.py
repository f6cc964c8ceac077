"""GradientMatchingCondenser: the matching distance, the batched path against the reference's class loop, bad input."""

from __future__ import annotations

import csv
import functools
import json
import shutil

import pytest
import torch
from hydra.utils import instantiate

from conftest import compose_config
from lossy_memory.memory.synthetic import load_synthetic_set
from lossy_memory.models.gradient_matching import FirstOrderPasses, GradientMatchingCondenser, default_loops, match_distance
from lossy_memory.nets import ConvNet

SMALL_NET = functools.partial(ConvNet, width=8, depth=2)


def toy_data(per_class: int = 12, classes: int = 10, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (per_class * classes, 1, 28, 28), dtype=torch.uint8, generator=generator)
    return images, torch.arange(classes).repeat(per_class)


def condenser(**kwargs) -> GradientMatchingCondenser:
    settings = dict(images_per_class=2, outer_loop=2, inner_loop=1, batch_real=6, batch_train=8, seed=0)
    settings.update(kwargs)
    model = GradientMatchingCondenser(SMALL_NET, (1, 28, 28), 10, **settings)
    model.attach_real_data(*toy_data())
    return model


def test_match_distance_is_one_minus_cosine_per_output_row_and_ignores_1d_parameters():
    real = {"w": torch.tensor([[1.0, 0.0], [0.0, 2.0]]), "b": torch.tensor([1.0, 2.0])}
    same = {"w": real["w"] * 3, "b": -real["b"]}
    opposite = {"w": -real["w"], "b": real["b"]}
    orthogonal = {"w": torch.tensor([[0.0, 1.0], [1.0, 0.0]]), "b": real["b"]}
    assert match_distance(real, same).item() == pytest.approx(0.0, abs=1e-6)  # bias sign flip ignored
    assert match_distance(real, opposite).item() == pytest.approx(4.0, abs=1e-5)  # 2 rows x (1 - (-1))
    assert match_distance(real, orthogonal).item() == pytest.approx(2.0, abs=1e-5)
    conv = torch.randn(3, 2, 3, 3)
    assert match_distance({"c": conv}, {"c": conv.clone()}).item() == pytest.approx(0.0, abs=1e-5)
    # stacked classes (lead=1) sum the per-class distances
    stacked = match_distance({"w": torch.stack([real["w"]] * 2)}, {"w": torch.stack([same["w"], opposite["w"]])}, lead=1)
    assert stacked.item() == pytest.approx(4.0, abs=1e-5)


def test_batched_path_gives_the_loops_match_loss_and_image_gradients(one_thread):
    model = condenser()
    torch.manual_seed(1)
    net = model.fresh_net()
    real = model.real_batches()
    synthetic = model.synthetic_images.view(10, 2, 1, 28, 28)
    results = {}
    for batched in (False, True):
        model.batched = batched
        model.synthetic_images.grad = None
        loss = model.match_loss(net, real, synthetic)
        loss.backward()
        results[batched] = (loss.detach(), model.synthetic_images.grad.clone())
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[True][1], results[False][1], rtol=1e-5, atol=1e-5)
    assert results[False][1].abs().sum() > 0


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_first_order_passes_give_the_eager_match_loss_image_gradients_and_network_update(one_thread):
    results = {}
    for compiled in (False, True):
        model = condenser(batched=False, compile=compiled)
        torch.manual_seed(1)
        net = model.fresh_net()
        passes = model.first_order(net)
        assert (passes.forward is net) is not compiled
        real = model.real_batches()
        loss = model.match_loss(net, real, model.synthetic_images.view(10, 2, 1, 28, 28), passes)
        loss.backward()
        model.train_net_on_synthetic(passes, torch.optim.SGD(net.parameters(), lr=0.1))
        results[compiled] = (loss.detach(), model.synthetic_images.grad.clone(), torch.cat([p.detach().flatten() for p in net.parameters()]))
    for eager, compiled in zip(results[False], results[True]):
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    assert results[True][1].abs().sum() > 0


def test_bfloat16_first_order_passes_give_float32_gradients_near_float32_and_train_the_float32_network(one_thread):
    model = condenser(batched=False, autocast_dtype="bfloat16", inner_loop=3)
    torch.manual_seed(1)
    net = model.fresh_net()
    passes = model.first_order(net)
    assert passes.net is not net and all(p.dtype == torch.bfloat16 for p in passes.net.parameters())
    real, labels = model.real_batches()[3], torch.full((6,), 3)
    low, full = passes.grads(real, labels), FirstOrderPasses(net).grads(real, labels)
    for g_low, g_full in zip(low, full):
        assert g_low.dtype == torch.float32 and g_low.shape == g_full.shape
        if g_full.dim() == 1:  # biases before instance norm have zero gradient (bf16 leaves noise); not matched anyway
            continue
        assert torch.nn.functional.cosine_similarity(g_low.flatten(), g_full.flatten(), dim=0) > 0.99
    before = [p.detach().clone() for p in net.parameters()]
    model.train_net_on_synthetic(passes, torch.optim.SGD(net.parameters(), lr=0.1))
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert not all(torch.equal(b, p) for b, p in zip(before, net.parameters()))
    for copy, master in zip(passes.net.parameters(), net.parameters()):  # the copy follows the float32 weights
        torch.testing.assert_close(copy, master.detach().to(torch.bfloat16), rtol=0, atol=0)


def test_outer_iteration_moves_the_synthetic_images_and_lowers_the_match_loss_on_a_fixed_net(one_thread):
    model = condenser(batched=True, lr_images=0.5)
    before = model.synthetic_images.detach().clone()
    optimizer = model.configure_optimizers()
    loss = model.outer_iteration(optimizer)
    assert loss > 0
    assert not torch.equal(before, model.synthetic_images.detach())
    # on one network and one real batch, repeated image steps lower the distance
    torch.manual_seed(0)
    net, real = model.fresh_net(), model.real_batches()
    synthetic = lambda: model.synthetic_images.view(10, 2, 1, 28, 28)  # noqa: E731
    first = model.match_loss(net, real, synthetic())
    for _ in range(5):
        optimizer.zero_grad()
        model.match_loss(net, real, synthetic()).backward()
        optimizer.step()
    assert model.match_loss(net, real, synthetic()).item() < first.item()


def test_real_init_takes_images_of_each_class_and_noise_init_does_not():
    images, labels = toy_data()
    model = condenser(init="real")
    normalised = model.to_input(images)
    for c in range(10):
        for row in model.synthetic_images.detach()[c * 2 : c * 2 + 2]:
            matches = (normalised - row).abs().flatten(1).amax(1) < 1e-6
            assert matches.any() and (labels[matches] == c).all()
    noise = condenser(init="noise").synthetic_images.detach()
    assert not any(((normalised - row).abs().flatten(1).amax(1) < 1e-6).any() for row in noise)


def test_reference_loops_by_images_per_class():
    assert default_loops(1) == (1, 1) and default_loops(10) == (10, 50) and default_loops(50) == (50, 10)
    model = GradientMatchingCondenser(SMALL_NET, (1, 28, 28), 10, images_per_class=10)
    assert (model.outer_loop, model.inner_loop) == (10, 50)
    with pytest.raises(ValueError, match="set model.outer_loop and model.inner_loop"):
        GradientMatchingCondenser(SMALL_NET, (1, 28, 28), 10, images_per_class=3)


def test_more_images_per_class_than_a_class_has_is_a_clear_error():
    images, labels = toy_data(per_class=5)
    model = GradientMatchingCondenser(SMALL_NET, (1, 28, 28), 10, images_per_class=10)
    with pytest.raises(ValueError, match=r"model.images_per_class=10 is larger than .*class 0: 5.*lower model.images_per_class to at most 5"):
        model.attach_real_data(images, labels)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="model.init"):
        GradientMatchingCondenser(SMALL_NET, (1, 28, 28), 10, init="zeros")
    with pytest.raises(ValueError, match="cannot take images"):
        GradientMatchingCondenser(functools.partial(ConvNet, depth=3), (1, 4, 4), 10)


def test_condense_experiment_runs_end_to_end_and_saves_the_set(real_data_dir, tmp_path, one_thread):
    from lossy_memory.train import train

    cfg = compose_config(["+experiment=mnist_condense", f"paths.data_dir={real_data_dir}", "model.iterations=2",
                          "classifier.width=8", "classifier.depth=2", "eval_classifier.width=8", "eval_classifier.depth=2",
                          "model.batch_real=16", "model.eval_nets=2", "model.eval_epochs=3", "logger=csv"], tmp_path / "run")
    metrics = train(cfg)
    assert 0 <= metrics["test/accuracy"] <= 1 and "test/accuracy_std" in metrics
    synthetic = load_synthetic_set(tmp_path / "run" / "synthetic" / "synthetic_set.pt", (1, 28, 28), 10)
    assert synthetic.images.shape == (10, 1, 28, 28) and synthetic.labels.tolist() == list(range(10))
    assert synthetic.extras["iterations"] == 2
    assert (tmp_path / "run" / "synthetic" / "synthetic_set.png").is_file()
    evaluation = json.loads((tmp_path / "run" / "synthetic" / "evaluation.json").read_text())
    accuracies = evaluation["eval_net"]["accuracies"]  # one per fresh network: what test/accuracy averages
    assert len(accuracies) == 2 and metrics["test/accuracy"] == pytest.approx(sum(accuracies) / 2)
    from lossy_memory.report import condensation
    from lossy_memory.report.runs import collect

    assert "| gradient matching (real init) | MNISTDataModule | 1 | ConvNet | 1 | 2 |" in condensation.table(collect([tmp_path / "run"]), tmp_path)
    (row,) = csv.DictReader((tmp_path / "condensation.csv").open())
    assert float(row["accuracy"]) == pytest.approx(100 * metrics["test/accuracy"])


def test_crossarch_experiment_builds_every_evaluator(tmp_path):
    cfg = compose_config(["+experiment=mnist_condense_crossarch"], tmp_path / "run")
    model = instantiate(cfg.model)
    assert set(model.cross_arch) == {"mlp", "convnet", "lenet", "alexnet", "vgg11", "resnet18"}
    assert cfg.cross_arch.resnet18.norm == "instance" and cfg.cross_arch.vgg11.norm == "instance"  # the reference's norms
    assert list(cfg.cross_arch.mlp.hidden) == [128, 128]  # the reference's MLP
    assert model.eval_settings["epochs"] == 1000 and model.eval_settings["augment"]  # the reference's length with augmentation
