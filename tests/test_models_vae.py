"""DiscreteVAE and ContinuousVAE: the storage interface, the storage report, a learning step."""

import functools

import pytest
import torch

from lossy_memory.models import ContinuousVAE, DiscreteVAE
from lossy_memory.nets import CategoricalLatent, ConvDecoder, ConvEncoder, GaussianLatent


def make_discrete(c=38, l=2, shape=(1, 28, 28), **kwargs):
    return DiscreteVAE(
        CategoricalLatent(c, l), functools.partial(ConvEncoder), functools.partial(ConvDecoder),
        functools.partial(torch.optim.Adam, lr=1e-3), shape, **kwargs,
    )


def test_encode_gives_integer_codes_and_decode_gives_images():
    model = make_discrete(c=10, l=16, shape=(3, 32, 32))
    x = torch.rand(5, 3, 32, 32)
    codes = model.encode(x)
    assert codes.dtype == torch.long and codes.shape == (5, 10)
    assert codes.min() >= 0 and codes.max() < 16
    images = model.decode(codes)
    assert images.shape == (5, 3, 32, 32)
    assert torch.equal(model.reconstruct(x), images)


@pytest.mark.parametrize(("c", "ratio"), [(38, 6272 / 38), (168, 6272 / 168)])
def test_storage_report_counts_bits_as_in_eq_1(c, ratio):
    model = make_discrete(c=c, l=2)
    report = model.storage_report()
    assert report["bits_per_item"] == c
    assert report["compression_ratio"] == pytest.approx(ratio)
    assert report["parameter_bits"] == 32 * sum(p.numel() for p in model.parameters())


def test_filters_default_to_c_times_l_over_4():
    model = make_discrete(c=168, l=2)
    assert model.encoder.features[0].out_channels == 84
    assert make_discrete(c=38, l=2, hidden=16).encoder.features[0].out_channels == 16


def test_model_rejects_a_latent_of_the_wrong_kind():
    with pytest.raises(TypeError, match="CategoricalLatent"):
        DiscreteVAE(GaussianLatent(4), ConvEncoder, ConvDecoder, torch.optim.Adam, (1, 28, 28))
    with pytest.raises(ValueError, match="image_shape"):
        make_discrete(shape=(28, 28))


def test_training_makes_the_codes_carry_the_image():
    """Two images (top half lit, bottom half lit): no constant reconstruction beats 0.5 distortion, so getting
    below it means the stored codes tell the images apart."""
    torch.manual_seed(0)
    model = make_discrete(c=8, l=2, hidden=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = torch.zeros(16, 1, 28, 28)
    x[:8, :, :14], x[8:, :, 14:] = 1.0, 1.0
    for _ in range(60):
        loss = model.training_step({"x": x, "y": torch.zeros(16)}, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        distortion = (model.reconstruct(x) - x).abs().mean().item()
        codes = model.encode(x)
    assert distortion < 0.1
    assert not torch.equal(codes[0], codes[-1])


@pytest.mark.parametrize("name", ["l1", "mse"])
def test_reconstruction_loss_is_the_configured_per_image_sum(name):
    model = make_discrete(c=8, l=2, hidden=8, reconstruction_loss=name)
    x_hat, x = torch.full((2, 1, 28, 28), 0.5), torch.zeros(2, 1, 28, 28)
    x[1] = 1.0
    # per pixel |0.5 - 0| = 0.5 (l1) or 0.25 (mse), summed over 784 pixels, for each of the two images
    expected = 784 * (0.5 if name == "l1" else 0.25)
    assert torch.allclose(model.reconstruction_error(x_hat, x), torch.full((2,), expected))


def test_an_unknown_reconstruction_loss_is_refused():
    with pytest.raises(ValueError, match="reconstruction_loss must be one of"):
        make_discrete(reconstruction_loss="bce")


def test_continuous_vae_stores_means():
    model = ContinuousVAE(GaussianLatent(8), ConvEncoder, ConvDecoder, torch.optim.Adam, (1, 28, 28))
    x = torch.rand(3, 1, 28, 28)
    codes = model.encode(x)
    assert codes.shape == (3, 8) and codes.dtype == torch.float32
    assert model.storage_report()["bits_per_item"] == 256
    assert model.decode(codes).shape == (3, 1, 28, 28)


def test_a_configured_scheduler_steps_per_epoch():
    model = make_discrete(scheduler=functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=10))
    config = model.configure_optimizers()
    assert isinstance(config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.CosineAnnealingLR)
    assert config["lr_scheduler"]["interval"] == "epoch"
    assert config["lr_scheduler"]["scheduler"].optimizer is config["optimizer"]
    assert isinstance(make_discrete().configure_optimizers(), torch.optim.Adam)
