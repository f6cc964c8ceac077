"""Synthetic training sets (dataset distillation / condensation): the file format and the field's evaluation protocol.

A synthetic set is a handful of float images with labels, learned in *normalised* space (the condensation reference
normalises MNIST with mean 0.1307, std 0.3081 before anything else), plus optional per-step learning rates (Wang
et al.) and whatever else a method needs to replay it. ``SyntheticSet.save`` writes one tensor file (``.pt``) and a
PNG grid beside it; ``load_synthetic_set`` reads it back and checks its shapes against the data it is meant for, so
a set condensed from another dataset fails clearly instead of training a network on garbage.

``evaluate_synthetic_set`` is the protocol the papers report (Zhao et al. 2021, ``evaluate_synset``): train N fresh
networks on the synthetic set alone (SGD momentum 0.9, weight decay 5e-4, lr 0.01 decayed x0.1 at half of 300
epochs, batch 256, optionally with the reference's MNIST augmentation) and report their test accuracy mean +- std.
Any network of the zoo can be the evaluator, which is the cross-architecture experiment.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.utils import save_image

# Channel statistics the condensation reference normalises with (utils.get_dataset).
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)

FORMAT_VERSION = 1


def default_stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """MNIST's statistics for grey images, CIFAR-10's for colour ones (the reference's two datasets)."""
    return (MNIST_MEAN, MNIST_STD) if channels == 1 else (CIFAR10_MEAN, CIFAR10_STD)


class Normalizer(nn.Module):
    """(x - mean) / std per channel, and back; a module so it follows the model between devices."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"normalisation needs one mean and one positive std per channel, got mean={list(mean)} std={list(std)}")
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean

    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per channel, as SyntheticSet stores them."""
        return tuple(self.mean.flatten().tolist()), tuple(self.std.flatten().tolist())


def check_images_per_class(labels: torch.Tensor, images_per_class: int, num_classes: int, what: str = "model.images_per_class") -> None:
    """A ValueError unless every class has at least ``images_per_class`` examples (they are drawn without replacement)."""
    if isinstance(images_per_class, bool) or int(images_per_class) != images_per_class or images_per_class < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {images_per_class!r}")
    counts = torch.bincount(labels.long().cpu(), minlength=num_classes)
    short = [(c, int(n)) for c, n in enumerate(counts.tolist()) if n < images_per_class]
    if short:
        listed = ", ".join(f"class {c}: {n}" for c, n in short[:5])
        raise ValueError(f"{what}={images_per_class} is larger than the number of training examples of some classes ({listed}); "
                         f"lower {what} to at most {int(counts.min())}, or use a larger training split")


@dataclass
class SyntheticSet:
    """Images [M, C, H, W] in normalised space, their labels [M], the normalisation, and method extras."""

    images: torch.Tensor
    labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    learning_rates: torch.Tensor | None = None  # Wang et al.: one per unrolled step, replayed in order
    extras: dict = field(default_factory=dict)  # e.g. the fixed theta_0 of Wang et al., the method's settings

    def __post_init__(self):
        if self.images.dim() != 4:
            raise ValueError(f"synthetic images must be [M, C, H, W], got shape {list(self.images.shape)}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"synthetic labels must have shape [{len(self.images)}], got {list(self.labels.shape)}")
        if len(self.mean) != self.images.shape[1] or len(self.std) != self.images.shape[1]:
            raise ValueError(f"one mean and std per channel ({self.images.shape[1]}), got {list(self.mean)} and {list(self.std)}")
        self.images, self.labels = self.images.detach().cpu().float(), self.labels.detach().cpu().long()
        self.mean, self.std = tuple(float(m) for m in self.mean), tuple(float(s) for s in self.std)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def pixels(self) -> torch.Tensor:
        """The images back in [0, 1] pixel space (clamped), for looking at and for 8-bit storage."""
        return Normalizer(self.mean, self.std).inverse(self.images).clamp(0, 1)

    def save(self, path: str | Path, nrow: int | None = None) -> tuple[Path, Path]:
        """Write ``path`` (.pt) and a PNG grid beside it (one row per class when labels are grouped by class); returns both."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"format": FORMAT_VERSION, "images": self.images, "labels": self.labels, "mean": list(self.mean),
                    "std": list(self.std), "learning_rates": self.learning_rates, "extras": self.extras}, path)
        grid = path.with_suffix(".png")
        per_class = int(torch.bincount(self.labels).max()) if len(self.labels) else 1
        # one row per class; a single image per class goes on one row
        save_image(self.pixels(), grid, nrow=nrow or (per_class if per_class > 1 else max(1, len(self.labels))), padding=2, pad_value=0.5)
        return path, grid


def save_synthetic_set(synthetic: SyntheticSet, path: str | Path, loggers: Sequence = ()) -> tuple[Path, Path]:
    """Save the set (tensor + PNG) and hand the PNG to every logger that takes images (W&B)."""
    tensor_path, grid_path = synthetic.save(path)
    for logger in loggers:
        if hasattr(logger, "log_image"):
            logger.log_image(key="synthetic_set", images=[str(grid_path)])
    return tensor_path, grid_path


def load_synthetic_set(path: str | Path, image_shape: Sequence[int] | None = None, num_classes: int | None = None) -> SyntheticSet:
    """Read a file written by ``SyntheticSet.save``; with ``image_shape`` / ``num_classes``, check it fits that data."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no synthetic set at {path}: condensation runs write <run dir>/synthetic/synthetic_set.pt")
    stored = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(stored, dict) or "images" not in stored or "labels" not in stored:
        raise ValueError(f"{path} is not a synthetic-set file (expected a dict with 'images' and 'labels', written by SyntheticSet.save)")
    synthetic = SyntheticSet(stored["images"], stored["labels"], tuple(stored["mean"]), tuple(stored["std"]),
                             stored.get("learning_rates"), stored.get("extras") or {})
    if image_shape is not None and synthetic.image_shape != tuple(int(s) for s in image_shape):
        raise ValueError(f"the synthetic set in {path} holds images of shape {list(synthetic.image_shape)} but the data has "
                         f"{list(image_shape)} (data.image_shape): evaluate it on the dataset it was condensed from "
                         f"(e.g. data=mnist for [1, 28, 28], data=cifar10 for [3, 32, 32])")
    if num_classes is not None and len(synthetic.labels) and int(synthetic.labels.max()) >= num_classes:
        raise ValueError(f"the synthetic set in {path} has labels up to {int(synthetic.labels.max())} but the data has "
                         f"{num_classes} classes (data.num_classes): evaluate it on the dataset it was condensed from")
    return synthetic


# -- the reference's MNIST augmentation, batched ------------------------------------------------------------------
@dataclass(frozen=True)
class Augmentation:
    """The condensation reference's ``augment`` (``dc_aug_param`` for MNIST: strategy crop_scale_rotate): each image
    gets one of the listed transforms, chosen at random. Done here as one batched affine resampling
    (``affine_grid`` + ``grid_sample``, bilinear, filled with the batch's channel means as the reference fills) instead
    of the reference's per-image Python loop with scipy; crop shifts by whole pixels up to ``crop``, scale stretches
    height and width independently by up to ``scale``, rotate turns by up to ``rotate`` degrees."""

    strategies: tuple[str, ...] = ("crop", "scale", "rotate")
    crop: int = 4
    scale: float = 0.2
    rotate: float = 45.0
    noise: float = 0.001

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n, _, h, w = images.shape
        dev = images.device
        rand = lambda *shape: torch.rand(*shape, generator=generator).to(dev)  # noqa: E731
        choice = torch.randint(len(self.strategies), (n,), generator=generator).to(dev)
        picked = {name: choice == i for i, name in enumerate(self.strategies)}
        theta = torch.zeros(n, 2, 3, device=dev)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        if "crop" in picked:  # integer shift in [-crop, crop], in grid units (2 / size per pixel)
            shift = (torch.randint(2 * self.crop + 1, (n, 2), generator=generator).to(dev) - self.crop).float()
            m = picked["crop"]
            theta[m, 0, 2], theta[m, 1, 2] = shift[m, 0] * 2 / w, shift[m, 1] * 2 / h
        if "scale" in picked:  # output = input stretched by factor f: sample the input at 1 / f
            factors = 1 + self.scale * (2 * rand(n, 2) - 1)
            m = picked["scale"]
            theta[m, 0, 0], theta[m, 1, 1] = 1 / factors[m, 0], 1 / factors[m, 1]
        if "rotate" in picked:
            angle = torch.deg2rad(self.rotate * (2 * rand(n) - 1))
            m = picked["rotate"]
            cos, sin = torch.cos(angle[m]), torch.sin(angle[m])
            theta[m, 0, 0], theta[m, 0, 1], theta[m, 1, 0], theta[m, 1, 1] = cos, -sin, sin, cos
        fill = images.mean(dim=(0, 2, 3), keepdim=True)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        out = F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
        if "noise" in picked:
            m = picked["noise"].view(-1, 1, 1, 1)
            out = torch.where(m, images + self.noise * torch.randn(images.shape, generator=generator).to(dev), out)
        return out


# -- the evaluation protocol -------------------------------------------------------------------------------------
def build_evaluation_net(net_factory: Callable[..., nn.Module], image_shape: Sequence[int], num_classes: int) -> nn.Module:
    """A fresh evaluation network for ``image_shape``; a network that cannot take that shape is a ValueError that says so."""
    try:
        net = net_factory(image_shape=tuple(image_shape), num_classes=num_classes)
    except ValueError as error:
        raise ValueError(f"the evaluation network cannot take the synthetic images (shape {list(image_shape)}): {error}. "
                         f"Choose another evaluation network (classifier=mlp takes any shape; classifier=convnet takes 28x28 and 32x32)") from error
    declared = getattr(net, "image_shape", None)
    if declared is not None and tuple(declared) != tuple(image_shape):
        raise ValueError(f"the evaluation network was built for images of shape {list(declared)} but the synthetic images have "
                         f"shape {list(image_shape)}; build it from the synthetic set's shape")
    return net


def train_on_synthetic(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int = 300, lr: float = 0.01,
                       momentum: float = 0.9, weight_decay: float = 5e-4, batch_size: int = 256,
                       augmentation: Augmentation | None = None, generator: torch.Generator | None = None) -> nn.Module:
    """Train ``net`` on the synthetic set as the reference's ``evaluate_synset``: SGD, lr x0.1 at half the epochs."""
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"evaluation needs epochs >= 1, batch_size >= 1 and lr > 0, got {epochs}, {batch_size}, {lr}")
    device = next(net.parameters()).device
    images, labels = images.detach().to(device), labels.to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[epochs // 2], gamma=0.1)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator).to(device)
        for start in range(0, len(images), batch_size):
            index = order[start : start + batch_size]
            x = images[index]
            if augmentation is not None:
                x = augmentation(x, generator)
            loss = F.cross_entropy(net(x), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    net.eval()
    return net


@torch.no_grad()
def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``net`` on (already normalised) images, in eval mode."""
    net.eval()
    device = next(net.parameters()).device
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = net(images[start : start + batch_size].to(device))
        correct += int((logits.argmax(1) == labels[start : start + batch_size].to(device)).sum())
    return correct / len(images)


def summarize(accuracies: Sequence[float]) -> dict[str, float]:
    values = list(accuracies)
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "count": len(values)}


def reference_eval_epochs(augment: bool) -> int:
    """The reference's evaluation length (DatasetCondensation main.py): 1,000 epochs when the evaluation networks train
    with augmentation ("training with data augmentation needs more epochs"; MNIST always does), 300 without."""
    return 1000 if augment else 300


def evaluate_synthetic_set(images: torch.Tensor, labels: torch.Tensor, test_images: torch.Tensor, test_labels: torch.Tensor,
                           net_factory: Callable[..., nn.Module], num_classes: int, num_nets: int = 20, epochs: int | None = None,
                           lr: float = 0.01, batch_size: int = 256, augment: bool = False, seed: int = 0,
                           device: str | torch.device = "cpu", log: Callable[[str], None] | None = None) -> dict:
    """Train ``num_nets`` fresh networks on (images, labels), test each on (test_images, test_labels); all images
    normalised. ``epochs`` None: the reference's (``reference_eval_epochs``). Returns ``{"mean", "std", "count",
    "accuracies", "epochs"}`` (accuracies in [0, 1])."""
    if num_nets < 1:
        raise ValueError(f"num_nets must be >= 1, got {num_nets}")
    epochs = reference_eval_epochs(augment) if epochs is None else int(epochs)
    if tuple(test_images.shape[1:]) != tuple(images.shape[1:]):
        raise ValueError(f"synthetic images have shape {list(images.shape[1:])} but test images {list(test_images.shape[1:])}: "
                         "evaluate a synthetic set on the dataset it was condensed from")
    generator = torch.Generator().manual_seed(seed)
    augmentation = Augmentation() if augment else None
    accuracies = []
    for i in range(num_nets):
        torch.manual_seed(seed * 1000 + i)  # each evaluation network's initialisation
        net = build_evaluation_net(net_factory, images.shape[1:], num_classes).to(device)
        train_on_synthetic(net, images, labels, epochs=epochs, lr=lr, batch_size=batch_size, augmentation=augmentation, generator=generator)
        accuracies.append(accuracy(net, test_images, test_labels))
        if log is not None:
            log(f"evaluation network {i + 1}/{num_nets}: test accuracy {accuracies[-1]:.4f}")
    return {**summarize(accuracies), "accuracies": accuracies, "epochs": epochs}


def normalized_split(dataset, normalizer: Normalizer) -> tuple[torch.Tensor, torch.Tensor]:
    """A datamodule split (uint8 images, labels) as normalised float images and labels."""
    return normalizer(dataset.images.float() / 255), dataset.labels.long()


def storage_bits(synthetic: SyntheticSet, bits_per_pixel: int = 8) -> int:
    """Bits to store the set 8-bit quantised (pixels, labels at ceil(log2 classes), and 32-bit learning rates)."""
    classes = int(synthetic.labels.max()) + 1 if len(synthetic.labels) else 1
    label_bits = math.ceil(math.log2(classes)) if classes > 1 else 0
    lr_bits = 0 if synthetic.learning_rates is None else 32 * synthetic.learning_rates.numel()
    return synthetic.images.numel() * bits_per_pixel + len(synthetic.labels) * label_bits + lr_bits
