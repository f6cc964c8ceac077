"""Classifiers for 1x28x28 and 3x32x32 images: the zoo of the distillation, continual and condensation experiments.

Every network is built from ``image_shape`` [C, H, W] and ``num_classes`` and has the same two parts:
``embed(x)`` -> features [N, d] (the penultimate layer, for diversity, iCaRL's class means, feature matching) and
``head`` (one ``nn.Linear``), so ``forward(x) = head(embed(x))``. The variants follow the references the field
compares against:

* ``LeNet5``: conv 6@5x5 (padded to keep 28x28 at 32x32 geometry), max-pool, conv 16@5x5, max-pool, 120, 84 (ReLU).
* ``MLP``: fully connected, hidden sizes configurable (Riemer et al. Table 8: 300, 300; GEM's MNIST: 100, 100).
* ``ConvNet``: the dataset-condensation standard: depth x [conv 3x3 of width, instance norm (GroupNorm(C, C)), ReLU,
  2x2 average pooling], then a linear classifier.
* ``ResNet18``: BasicBlocks [2, 2, 2, 2] of widths nf, 2nf, 4nf, 8nf with a 3x3 stem and no max-pool (the
  CIFAR-style ResNet); ``nf=20`` is GEM's reduced ResNet-18, ``nf=64`` the full one.
* ``AlexNet`` and ``VGG11``: the small-image variants of the condensation reference (instance norm in VGG-11).

A shape a network cannot take (too small for its pooling) is a ValueError at construction, naming the network.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock


def _instance_norm(channels: int) -> nn.Module:
    # Instance norm with affine parameters, as GroupNorm so it also works on a single example at train time.
    return nn.GroupNorm(channels, channels, affine=True)


NORMS = {"instance": _instance_norm, "batch": nn.BatchNorm2d, "none": lambda channels: nn.Identity()}


def _norm(name: str):
    if name not in NORMS:
        raise ValueError(f"norm must be one of {sorted(NORMS)}, got {name!r}")
    return NORMS[name]


class AvgPool2x2(nn.AvgPool2d):
    """2x2 average pooling, stride 2 (odd edges dropped, as ``nn.AvgPool2d(2)``). Under ``torch.compile`` it is
    written as a reshape and a mean, which inductor fuses with the norm and ReLU around it into vectorised loops (for
    its own avg_pool2d backward it emits scalar code: the condensation ConvNet's bfloat16 step on a CPU core took 428 ms
    that way, 301 ms this way); eager keeps ATen's kernel, the faster one there."""

    def __init__(self):
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            return super().forward(x)
        return avg_pool_2x2_by_reshape(x)


def avg_pool_2x2_by_reshape(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    return x[..., : 2 * h, : 2 * w].unflatten(-1, (w, 2)).unflatten(-3, (h, 2)).mean((-1, -3))


class Classifier(nn.Module):
    """``embed`` (features) then ``head`` (a linear layer); subclasses build ``self.body`` and call ``finish``."""

    body: nn.Module
    head: nn.Linear

    def __init__(self, image_shape: Sequence[int], num_classes: int):
        super().__init__()
        if len(image_shape) != 3 or any(int(s) < 1 for s in image_shape):
            raise ValueError(f"{type(self).__name__}: image_shape must be [channels, height, width], got {list(image_shape)}")
        if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"{type(self).__name__}: num_classes must be an integer >= 2, got {num_classes!r}")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.num_classes = int(num_classes)

    def finish(self) -> None:
        """Size the head from one dry run of the body: shapes too small for the network fail here, clearly."""
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                features = self.body(torch.zeros(1, *self.image_shape)).flatten(1).shape[1]
        except (RuntimeError, ValueError) as error:
            raise ValueError(f"{type(self).__name__} cannot take images of shape {list(self.image_shape)} "
                             f"({' '.join(str(error).split())[:200]}); pick a network made for this size (MLP takes any)") from error
        self.train(was)
        self.num_features = features
        self.head = nn.Linear(features, self.num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


class LeNet5(Classifier):
    def __init__(self, image_shape: Sequence[int], num_classes: int):
        super().__init__(image_shape, num_classes)
        channels, height, width = self.image_shape
        pad = 2 if height < 32 else 0  # 28x28 digits are padded to LeNet's 32x32 geometry
        h, w = ((height + 2 * pad - 4) // 2 - 4) // 2, ((width + 2 * pad - 4) // 2 - 4) // 2
        if h < 1 or w < 1:
            raise ValueError(f"LeNet5 needs images of at least 16x16 (28x28 is padded to 32x32), got {list(self.image_shape)}")
        self.body = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * h * w, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        )
        self.finish()


class MLP(Classifier):
    def __init__(self, image_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (300, 300)):
        super().__init__(image_shape, num_classes)
        if not hidden or any(int(h) < 1 for h in hidden):
            raise ValueError(f"MLP: hidden must list at least one layer size >= 1, got {list(hidden)}")
        layers: list[nn.Module] = [nn.Flatten()]
        width = int(torch.tensor(self.image_shape).prod())
        for size in hidden:
            layers += [nn.Linear(width, int(size)), nn.ReLU()]
            width = int(size)
        self.body = nn.Sequential(*layers)
        self.finish()


class ConvNet(Classifier):
    """The dataset-condensation ConvNet: ``depth`` x [conv 3x3, norm, ReLU, 2x2 pooling], a linear head.
    ``first_padding``: the first convolution's padding; the condensation reference pads it by 3 for 1-channel input,
    so MNIST's 28x28 runs at the 32x32 geometry (feature maps 32/16/8/4, 2048 features at width 128, against
    28/14/7/3 and 1152 with 1)."""

    def __init__(self, image_shape: Sequence[int], num_classes: int, width: int = 128, depth: int = 3,
                 norm: str = "instance", pooling: str = "avg", first_padding: int = 1):
        super().__init__(image_shape, num_classes)
        if pooling not in ("avg", "max"):
            raise ValueError(f"ConvNet: pooling must be 'avg' or 'max', got {pooling!r}")
        if first_padding < 0:
            raise ValueError(f"ConvNet: first_padding must be >= 0, got {first_padding}")
        make_norm, pool = _norm(norm), AvgPool2x2 if pooling == "avg" else functools.partial(nn.MaxPool2d, 2)
        layers: list[nn.Module] = []
        channels = self.image_shape[0]
        for layer in range(depth):
            # in-place ReLU (the norm's backward needs its input, not its output): one activation copy less per layer
            layers += [nn.Conv2d(channels, width, 3, padding=first_padding if layer == 0 else 1), make_norm(width), nn.ReLU(inplace=True), pool()]
            channels = width
        self.body = nn.Sequential(*layers)
        self.finish()


class ResNet18(Classifier):
    """CIFAR-style ResNet-18 (torchvision's BasicBlock); nf=20 is GEM's reduced variant, nf=64 the full one."""

    def __init__(self, image_shape: Sequence[int], num_classes: int, nf: int = 20, norm: str = "batch"):
        super().__init__(image_shape, num_classes)
        make_norm = _norm(norm)
        layers: list[nn.Module] = [nn.Conv2d(self.image_shape[0], nf, 3, padding=1, bias=False), make_norm(nf), nn.ReLU()]
        inplanes = nf
        for i, stride in enumerate((1, 2, 2, 2)):
            planes = nf * 2**i
            for block_stride in (stride, 1):
                downsample = None
                if block_stride != 1 or inplanes != planes:
                    downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=block_stride, bias=False), make_norm(planes))
                layers.append(BasicBlock(inplanes, planes, block_stride, downsample, norm_layer=make_norm))
                inplanes = planes
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.body = nn.Sequential(*layers)
        self.finish()


class AlexNet(Classifier):
    """The condensation reference's AlexNet for small images (5 convs, 3 max-pools)."""

    def __init__(self, image_shape: Sequence[int], num_classes: int):
        super().__init__(image_shape, num_classes)
        channels, height, _ = self.image_shape
        pad = 4 if height < 32 else 2  # 28x28 is padded to the 32x32 geometry
        self.body = nn.Sequential(
            nn.Conv2d(channels, 128, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(128, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(192, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 192, 3, padding=1), nn.ReLU(),
            nn.Conv2d(192, 192, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.finish()


class VGG11(Classifier):
    """VGG-11 for small images (the condensation reference): 8 convs, 5 max-pools, instance norm, linear head."""

    LAYOUT = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")

    def __init__(self, image_shape: Sequence[int], num_classes: int, norm: str = "instance"):
        super().__init__(image_shape, num_classes)
        make_norm = _norm(norm)
        channels, height, _ = self.image_shape
        layers: list[nn.Module] = []
        first = True
        for item in self.LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            pad = 3 if first and height < 32 else 1  # 28x28 is padded to 32x32 by the first conv
            layers += [nn.Conv2d(channels, item, 3, padding=pad), make_norm(item), nn.ReLU()]
            channels, first = item, False
        self.body = nn.Sequential(*layers)
        self.finish()
