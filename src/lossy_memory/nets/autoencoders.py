"""Encoders and decoders of the VAEs: convolutional (paper, Appendix A: 3 conv / 3 transposed-conv layers, kernel 5),
and fully connected for inputs without spatial structure (permuted MNIST, whose pixels are shuffled per task)."""

from __future__ import annotations

from collections.abc import Sequence

import math

from torch import nn


def _strided_sizes(size: int, depth: int, kernel_size: int) -> list[int]:
    """Spatial sizes after each of `depth` stride-2 convolutions with 'same'-style padding."""
    sizes = [size]
    for _ in range(depth):
        sizes.append((sizes[-1] + 2 * (kernel_size // 2) - kernel_size) // 2 + 1)
    return sizes


class ConvEncoder(nn.Module):
    """`depth` stride-2 convolutions with ReLU, then a linear map to `out_features` logits."""

    def __init__(self, image_shape: Sequence[int], out_features: int, hidden: int, kernel_size: int = 5, depth: int = 3):
        super().__init__()
        channels, height, width = image_shape
        layers: list[nn.Module] = []
        in_channels = channels
        for _ in range(depth):
            layers += [nn.Conv2d(in_channels, hidden, kernel_size, stride=2, padding=kernel_size // 2), nn.ReLU()]
            in_channels = hidden
        self.features = nn.Sequential(*layers)
        h, w = _strided_sizes(height, depth, kernel_size)[-1], _strided_sizes(width, depth, kernel_size)[-1]
        self.head = nn.Linear(hidden * h * w, out_features)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class ConvDecoder(nn.Module):
    """A linear map to a small feature map, then `depth` stride-2 transposed convolutions back to the image.

    The output is linear (no sigmoid): under an L1 loss a sigmoid saturates on the mostly-black MNIST
    background and its vanishing gradient stalls training at the all-black image. Clamp to [0, 1] to display.
    """

    def __init__(self, in_features: int, image_shape: Sequence[int], hidden: int, kernel_size: int = 5, depth: int = 3):
        super().__init__()
        channels, height, width = image_shape
        heights = _strided_sizes(height, depth, kernel_size)
        widths = _strided_sizes(width, depth, kernel_size)
        self.hidden, self.start = hidden, (heights[-1], widths[-1])
        self.head = nn.Sequential(nn.Linear(in_features, hidden * heights[-1] * widths[-1]), nn.ReLU())
        layers: list[nn.Module] = []
        pad = kernel_size // 2
        for i in range(depth, 0, -1):
            # output_padding picks the exact size each encoder stage came from (e.g. 4 -> 7 -> 14 -> 28).
            out_pad = (heights[i - 1] - ((heights[i] - 1) * 2 - 2 * pad + kernel_size),
                       widths[i - 1] - ((widths[i] - 1) * 2 - 2 * pad + kernel_size))
            out_channels = channels if i == 1 else hidden
            layers.append(nn.ConvTranspose2d(hidden, out_channels, kernel_size, stride=2, padding=pad, output_padding=out_pad))
            if i > 1:
                layers.append(nn.ReLU())
        self.features = nn.Sequential(*layers)

    def forward(self, z):
        return self.features(self.head(z).view(-1, self.hidden, *self.start))


class MLPEncoder(nn.Module):
    """`depth` fully connected layers of `hidden` units with ReLU on the flattened image, then a linear map to `out_features`."""

    def __init__(self, image_shape: Sequence[int], out_features: int, hidden: int, depth: int = 2):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(image_shape)
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, out_features))

    def forward(self, x):
        return self.net(x)


class MLPDecoder(nn.Module):
    """`depth` fully connected layers of `hidden` units with ReLU, then a linear map to every pixel (linear output,
    as ConvDecoder: no sigmoid to saturate under L1)."""

    def __init__(self, in_features: int, image_shape: Sequence[int], hidden: int, depth: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.image_shape = tuple(image_shape)
        self.net = nn.Sequential(*layers, nn.Linear(width, math.prod(image_shape)))

    def forward(self, z):
        return self.net(z).view(-1, *self.image_shape)
