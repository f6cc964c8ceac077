"""Exact L1 nearest-neighbour distances from generated images to a reference set (paper, Table 1).

How close recollections come to real training images: for each query image, the mean absolute difference per
pixel ([0, 1] scale) to its nearest reference image. Exact (every pair is compared), in chunks so that memory
stays bounded whatever the sizes: one [query_chunk, reference_chunk] block of distances at a time.
"""

from __future__ import annotations

import torch


def nearest_neighbor_distances(queries: torch.Tensor, references: torch.Tensor, query_chunk: int = 1024,
                               reference_chunk: int = 8192) -> torch.Tensor:
    """Per query, the mean absolute difference per pixel to its nearest reference: float32 [M] on ``queries``' device.

    ``queries``: float images in [0, 1], [M, ...]. ``references``: [R, ...] images of the same per-item shape,
    floats in [0, 1] or uint8 (read as value / 255, as the datamodules serve them); they may sit on another
    device (e.g. the whole training set on the CPU) and are moved one chunk at a time. Peak extra memory is about
    ``reference_chunk * D`` floats plus ``query_chunk * reference_chunk`` distances (8192 x 1024: 32 MB).
    """
    for name, value in (("query_chunk", query_chunk), ("reference_chunk", reference_chunk)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not queries.dtype.is_floating_point:
        raise ValueError(f"queries must be floating-point images in [0, 1], got {queries.dtype}")
    if references.dtype != torch.uint8 and not references.dtype.is_floating_point:
        raise ValueError(f"references must be uint8 or floating-point images, got {references.dtype}")
    if queries.dim() < 2 or references.dim() < 2 or queries.shape[1:] != references.shape[1:]:
        raise ValueError(f"queries {tuple(queries.shape)} and references {tuple(references.shape)} must be [N, ...] "
                         "batches of items of one shape")
    if len(references) == 0:
        raise ValueError("references must hold at least one image")
    flat = queries.flatten(1).float()
    pixels = flat.shape[1]
    best = torch.full((len(flat),), torch.inf, device=flat.device)
    for block in references.flatten(1).split(int(reference_chunk)):
        block = block.to(flat.device).float()
        if references.dtype == torch.uint8:
            block = block / 255
        for start in range(0, len(flat), int(query_chunk)):
            rows = slice(start, start + int(query_chunk))
            best[rows] = torch.minimum(best[rows], torch.cdist(flat[rows], block, p=1).amin(dim=1))
    return best / pixels
