"""Coreset baselines at equal images per class: which real examples to keep instead of synthesising new ones.

The condensation papers compare against four selections, each made class by class (``select_coreset``):

* ``random_real``: uniformly at random.
* ``herding`` (Welling 2009; Rebuffi et al. 2017): greedily add the example that brings the running mean of the chosen
  features closest to the class mean.
* ``k_center`` (Sener & Savarese 2018): greedy farthest-first traversal in feature space, starting from the example
  nearest to the class mean.
* ``forgetting`` (Toneva et al. 2019): the examples forgotten most often while a network trains on the full set
  (``forgetting_scores``; never-learned examples count as forgotten most).

Wang et al. (2018) add baselines that are not subsets: ``class_average`` (the mean image of each class, repeated),
``kmeans_centroids`` (k-means centroids per class, in pixel space) and ``knn_accuracy`` (1-NN classification of the
test set with the kept images as the only references).

Features are whatever the caller passes: flattened pixels, or ``net.embed`` of a network trained on the real data
(the reference uses a trained ConvNet's features). All functions return indices into the given tensors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lossy_memory.memory.synthetic import check_images_per_class

METHODS = ("random", "herding", "k_center", "forgetting")  # subsets; class_average / kmeans_centroids make new images


def random_real(count: int, generator: torch.Generator | None = None, **_) -> torch.Tensor:
    return torch.randperm(count, generator=generator)


def herding(features: torch.Tensor, k: int) -> torch.Tensor:
    """The first ``k`` herding choices (all n when k > n) among ``features`` [n, d] of one class."""
    features = features.float()
    mean = features.mean(0)
    chosen: list[int] = []
    running = torch.zeros_like(mean)
    available = torch.ones(len(features), dtype=torch.bool, device=features.device)
    for t in range(1, min(k, len(features)) + 1):
        # mean of the chosen set if candidate i were added: (running + f_i) / t
        distance = ((running.unsqueeze(0) + features) / t - mean).norm(dim=1)
        distance[~available] = float("inf")
        i = int(distance.argmin())
        chosen.append(i)
        available[i] = False
        running += features[i]
    return torch.tensor(chosen, dtype=torch.long)


def k_center(features: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy k-center (farthest-first) among ``features`` [n, d] of one class, seeded at the example nearest the mean."""
    features = features.float()
    first = int((features - features.mean(0)).norm(dim=1).argmin())
    chosen = [first]
    nearest = (features - features[first]).norm(dim=1)
    for _ in range(k - 1):
        i = int(nearest.argmax())
        chosen.append(i)
        nearest = torch.minimum(nearest, (features - features[i]).norm(dim=1))
    return torch.tensor(chosen, dtype=torch.long)


def forgetting_scores(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int = 2, batch_size: int = 128,
                      lr: float = 0.01, generator: torch.Generator | None = None) -> torch.Tensor:
    """Forgetting events per example (Toneva et al. 2019) while ``net`` trains on (images, labels) with SGD.

    Each time an example is in a mini-batch its correctness is recorded; a forgetting event is a correct -> wrong
    transition between its presentations. Examples never classified correctly get ``inf`` (most forgettable)."""
    device = next(net.parameters()).device
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    previous = torch.zeros(len(images), dtype=torch.bool)
    ever_learned = torch.zeros(len(images), dtype=torch.bool)
    forgotten = torch.zeros(len(images))
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch_size):
            index = order[start : start + batch_size]
            x, y = images[index].to(device), labels[index].to(device)
            logits = net(x)
            correct = (logits.argmax(1) == y).cpu()
            forgotten[index] += (previous[index] & ~correct).float()
            previous[index], ever_learned[index] = correct, ever_learned[index] | correct
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    forgotten[~ever_learned] = float("inf")
    return forgotten


def select_coreset(method: str, labels: torch.Tensor, images_per_class: int, num_classes: int,
                   features: torch.Tensor | None = None, scores: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of ``images_per_class`` examples of each class, grouped by class, chosen by ``method``.

    ``herding`` and ``k_center`` need ``features`` [n, d]; ``forgetting`` needs ``scores`` [n] (``forgetting_scores``).
    """
    if method not in METHODS:
        raise ValueError(f"coreset method must be one of {METHODS}, got {method!r}")
    check_images_per_class(labels, images_per_class, num_classes, what="images_per_class")
    if method in ("herding", "k_center") and (features is None or len(features) != len(labels)):
        raise ValueError(f"{method} needs features for every example ([{len(labels)}, d]): pass flattened pixels or a trained net's embed")
    if method == "forgetting" and (scores is None or len(scores) != len(labels)):
        raise ValueError(f"forgetting needs one score per example ([{len(labels)}]): compute them with forgetting_scores")
    chosen = []
    for c in range(num_classes):
        members = torch.nonzero(labels.cpu() == c).flatten()
        if method == "random":
            picked = random_real(len(members), generator=generator)[:images_per_class]
        elif method == "herding":
            picked = herding(features[members].flatten(1), images_per_class)
        elif method == "k_center":
            picked = k_center(features[members].flatten(1), images_per_class)
        else:
            ranked = scores[members]
            # ties (many examples are never forgotten) broken at random, so the selection is not just the first ones
            jitter = torch.rand(len(members), generator=generator) * 1e-3
            picked = torch.argsort(ranked + jitter, descending=True)[:images_per_class]
        chosen.append(members[picked])
    return torch.cat(chosen)


@torch.no_grad()
def embed_all(embed: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """``embed`` applied in batches (features for herding / k-center)."""
    return torch.cat([embed(images[i : i + batch_size]).cpu() for i in range(0, len(images), batch_size)])


def class_average(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One image per class: the class's mean image (Wang et al.'s "average real" baseline)."""
    check_images_per_class(labels, 1, num_classes, what="images_per_class")
    means = torch.stack([images[labels == c].float().mean(0) for c in range(num_classes)])
    return means, torch.arange(num_classes)


def kmeans_centroids(images: torch.Tensor, labels: torch.Tensor, k: int, num_classes: int, iterations: int = 20,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` k-means centroids per class in pixel space (Lloyd's iterations from k random members), grouped by class."""
    check_images_per_class(labels, k, num_classes, what="images_per_class")
    centroids = []
    for c in range(num_classes):
        points = images[labels == c].flatten(1).float()
        centers = points[torch.randperm(len(points), generator=generator)[:k]].clone()
        for _ in range(iterations):
            assign = torch.cdist(points, centers).argmin(1)
            for j in range(k):
                members = points[assign == j]
                if len(members):
                    centers[j] = members.mean(0)
        centroids.append(centers.view(k, *images.shape[1:]))
    return torch.cat(centroids), torch.arange(num_classes).repeat_interleave(k)


@torch.no_grad()
def knn_accuracy(references: torch.Tensor, reference_labels: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
                 batch_size: int = 1000) -> float:
    """Accuracy of 1-nearest-neighbour (Euclidean, pixel space) classification of ``images`` by the references."""
    flat = references.flatten(1).float()
    correct = 0
    for start in range(0, len(images), batch_size):
        nearest = torch.cdist(images[start : start + batch_size].flatten(1).float(), flat).argmin(1)
        correct += int((reference_labels[nearest] == labels[start : start + batch_size]).sum())
    return correct / len(images)
