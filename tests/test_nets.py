"""The bottlenecks and the conv encoder/decoder: shapes, bit accounting, the straight-through gradient."""

import math

import pytest
import torch

from lossy_memory.nets import CategoricalLatent, ConvDecoder, ConvEncoder, GaussianLatent, MLPDecoder, MLPEncoder


@pytest.mark.parametrize(("c", "l", "bits"), [(38, 2, 38), (168, 2, 168), (20, 3, 40), (10, 256, 80), (7, 257, 63), (1, 65536, 16)])
def test_categorical_bits_per_item_is_c_times_ceil_log2_l(c, l, bits):
    assert CategoricalLatent(c, l).bits_per_item == bits == c * math.ceil(math.log2(l))


def test_gaussian_bits_per_item_is_32_per_variable():
    assert GaussianLatent(16).bits_per_item == 512


@pytest.mark.parametrize("kwargs", [{"c": 0, "l": 2}, {"c": 4, "l": 1}, {"c": 2.5, "l": 2}, {"c": 4, "l": 2, "tau": 0.0}])
def test_categorical_rejects_bad_sizes(kwargs):
    with pytest.raises(ValueError, match="latent"):
        CategoricalLatent(**kwargs)


def test_categorical_forward_is_hard_one_hot_with_kl_to_uniform():
    latent = CategoricalLatent(c=5, l=4)
    logits = torch.randn(3, 20)
    sample, kl = latent(logits)
    assert sample.shape == (3, 20)
    per_variable = sample.view(3, 5, 4)
    assert torch.equal(per_variable.sum(-1), torch.ones(3, 5))
    assert set(per_variable.unique().tolist()) <= {0.0, 1.0}
    q = latent.normalize(logits).view(3, 5, 4).softmax(-1)
    expected = (q * (q.log() + math.log(4))).sum((1, 2))
    torch.testing.assert_close(kl, expected)
    _, kl_uniform = latent(torch.zeros(2, 20))
    torch.testing.assert_close(kl_uniform, torch.zeros(2))


def test_logits_start_confident_whatever_the_encoder_scale():
    """Near-zero encoder outputs still give logits of std init_logit_std, so first samples are not coin flips."""
    latent = CategoricalLatent(c=50, l=4, init_logit_std=3.0)
    normalized = latent.normalize(0.05 * torch.randn(8, 200))  # a fresh encoder emits ~0.02-0.05
    torch.testing.assert_close(normalized.std(dim=1, unbiased=False), torch.full((8,), 3.0), rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="init_logit_std"):
        CategoricalLatent(c=2, l=2, init_logit_std=0.0)


def test_straight_through_gradient_equals_the_soft_relaxation_gradient():
    """Hard forward, soft backward: d(hard sample)/d(logits) is the Gumbel-softmax relaxation's gradient."""
    latent = CategoricalLatent(c=6, l=3, tau=0.7)
    logits = torch.randn(4, 18, requires_grad=True)
    weights = torch.randn(4, 18)
    torch.manual_seed(0)
    hard, _ = latent(logits)
    (grad_hard,) = torch.autograd.grad((hard * weights).sum(), logits)
    torch.manual_seed(0)
    soft = torch.nn.functional.gumbel_softmax(latent.normalize(logits).view(4, 6, 3), tau=0.7, hard=False).flatten(1)
    (grad_soft,) = torch.autograd.grad((soft * weights).sum(), logits)
    assert grad_hard.abs().sum() > 0
    torch.testing.assert_close(grad_hard, grad_soft)


def test_codes_embed_round_trip_and_range_checks():
    latent = CategoricalLatent(c=4, l=5)
    codes = torch.tensor([[0, 4, 2, 1], [3, 3, 0, 4]])
    assert torch.equal(latent.codes(latent.embed(codes)), codes)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        latent.embed(torch.tensor([[0, 5, 0, 0]]))
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        latent.embed(torch.zeros(2, 3, dtype=torch.long))


def test_temperature_annealing_is_exponential_with_a_floor():
    latent = CategoricalLatent(c=1, l=2, tau=1.0, tau_min=0.5, anneal_rate=1e-3)
    assert latent.temperature(0) == 1.0
    assert latent.temperature(100) == pytest.approx(math.exp(-0.1))
    assert latent.temperature(10_000) == 0.5
    assert CategoricalLatent(c=1, l=2).temperature(10_000) == 1.0


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 105, 105)])
def test_encoder_decoder_map_images_to_logits_and_back(shape):
    encoder = ConvEncoder(shape, out_features=40, hidden=8)
    decoder = ConvDecoder(40, shape, hidden=8)
    x = torch.rand(2, *shape)
    logits = encoder(x)
    assert logits.shape == (2, 40)
    x_hat = decoder(logits)
    assert x_hat.shape == (2, *shape)
    assert torch.isfinite(x_hat).all()
    assert [m.out_channels for m in encoder.features if isinstance(m, torch.nn.Conv2d)] == [8, 8, 8]
    assert all(m.kernel_size == (5, 5) for m in encoder.features if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_fully_connected_encoder_decoder_map_images_to_logits_and_back(shape):
    encoder, decoder = MLPEncoder(shape, out_features=76, hidden=400), MLPDecoder(38, shape, hidden=400)
    logits = encoder(torch.rand(2, *shape))
    assert logits.shape == (2, 76) and decoder(logits[:, :38]).shape == (2, *shape)
    widths = [(m.in_features, m.out_features) for m in encoder.net if isinstance(m, torch.nn.Linear)]
    assert widths == [(math.prod(shape), 400), (400, 400), (400, 76)]
    assert [m.out_features for m in decoder.net if isinstance(m, torch.nn.Linear)] == [400, 400, math.prod(shape)]
