"""The classifier zoo: every network takes 1x28x28 and 3x32x32, splits into embed + head, and refuses shapes it cannot take."""

import pytest
import torch

from lossy_memory.nets import MLP, VGG11, AlexNet, ConvNet, LeNet5, ResNet18

ZOO = [(LeNet5, {}), (MLP, {}), (ConvNet, {}), (ResNet18, {"nf": 20}), (ResNet18, {"nf": 64}), (AlexNet, {}), (VGG11, {})]


@pytest.mark.parametrize(("net", "kwargs"), ZOO, ids=lambda v: getattr(v, "__name__", str(v)))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_every_network_classifies_both_image_sizes(net, kwargs, shape, one_thread):
    torch.manual_seed(0)
    model = net(shape, num_classes=7, **kwargs)
    x = torch.rand(2, *shape)
    features = model.embed(x)
    assert features.shape == (2, model.num_features)
    torch.testing.assert_close(model(x), model.head(features))
    assert model(x).shape == (2, 7)
    model(x).sum().backward()  # trains: every parameter gets a gradient
    assert all(p.grad is not None for p in model.parameters())


def test_known_sizes_of_the_references():
    # LeNet-5 on MNIST: 61,706 parameters; GEM's reduced ResNet-18 on CIFAR-100: about 1.1M (feature width 8*nf = 160).
    assert sum(p.numel() for p in LeNet5((1, 28, 28), 10).parameters()) == 61706
    resnet = ResNet18((3, 32, 32), 100, nf=20)
    assert resnet.num_features == 160 and 1.0e6 < sum(p.numel() for p in resnet.parameters()) < 1.3e6
    assert ConvNet((1, 28, 28), 10).num_features == 128 * 3 * 3 and ConvNet((3, 32, 32), 10).num_features == 128 * 4 * 4
    # the condensation reference's MNIST layout (conf/classifier/convnet_mnist): first convolution padded by 3, 32/16/8/4 maps
    assert ConvNet((1, 28, 28), 10, first_padding=3).num_features == 128 * 4 * 4
    assert MLP((1, 28, 28), 10, hidden=[100, 100]).num_features == 100


def test_conv_net_uses_instance_norm_and_average_pooling():
    layers = list(ConvNet((1, 28, 28), 10, depth=3).body)
    norms = [m for m in layers if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 3 and all(m.num_groups == m.num_channels == 128 for m in norms)
    assert sum(isinstance(m, torch.nn.AvgPool2d) for m in layers) == 3


def test_instance_norm_networks_train_on_a_single_example():
    """Instance norm needs no batch statistics: a batch of one trains (with batch norm it would not), and every
    parameter gets a gradient that lowers the loss."""
    torch.manual_seed(0)
    net, x, y = ConvNet((1, 28, 28), 10), torch.rand(1, 1, 28, 28), torch.tensor([3])
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    before = torch.nn.functional.cross_entropy(net(x), y)
    for _ in range(5):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters() if p.requires_grad)
        optimizer.step()
    assert torch.nn.functional.cross_entropy(net(x), y) < before


@pytest.mark.parametrize(("net", "shape"), [(ConvNet, (1, 4, 4)), (VGG11, (1, 16, 16)), (LeNet5, (1, 8, 8))])
def test_a_shape_too_small_is_a_clear_error(net, shape):
    with pytest.raises(ValueError, match=rf"{net.__name__}.*{shape[1]}"):
        net(shape, 10)


@pytest.mark.parametrize("kwargs", [{"num_classes": 1}, {"num_classes": 2.5}, {"image_shape": (28, 28)}])
def test_bad_sizes_are_rejected(kwargs):
    args = {"image_shape": (1, 28, 28), "num_classes": 10} | kwargs
    with pytest.raises(ValueError, match="MLP"):
        MLP(**args)


def test_unknown_norm_is_rejected():
    with pytest.raises(ValueError, match="norm must be one of"):
        ConvNet((1, 28, 28), 10, norm="layer")


@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (2, 3, 7, 7), (1, 1, 5, 4)])
def test_the_compiled_form_of_average_pooling_equals_atens_with_odd_edges_dropped(shape):
    from lossy_memory.nets.classifiers import avg_pool_2x2_by_reshape

    x = torch.randn(shape, requires_grad=True)
    expected = torch.nn.functional.avg_pool2d(x, 2)
    got = avg_pool_2x2_by_reshape(x)
    torch.testing.assert_close(got, expected)
    upstream = torch.randn_like(expected)
    (g_expected,) = torch.autograd.grad(expected, x, upstream)
    (g_got,) = torch.autograd.grad(got, x, upstream)
    torch.testing.assert_close(g_got, g_expected)
