"""JPEG as a hand-designed lossy store: the baseline the learned codes are compared with at equal bits.

Every image is its own baseline JPEG file (Pillow/libjpeg, ``optimize=False``, so the standard Huffman
tables). Only the entropy-coded scan counts as the cost of an item: the framing before it (SOI, JFIF APP0,
quantisation tables, frame header, Huffman tables and the SOS segment header) and the EOI marker after it
depend on nothing but image size, mode and quality, so they are what an all-zero image of the same size and
quality also costs, and a store of many items would keep them once. Distortion is the mean absolute
per-pixel error on the [0, 1] scale, the measure of the paper's Tables 6-7.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

QUALITIES: tuple[int, ...] = (1, 25, 50, 75, 100)
MNIST_ITEMS = 10_000

_SOI, _EOI, _SOS = b"\xff\xd8", b"\xff\xd9", 0xDA
# Markers that stand alone (no length field): TEM and RST0-7.
_STANDALONE = {0x01, *range(0xD0, 0xD8)}


@dataclass(frozen=True)
class JpegPoint:
    """One quality setting over a set of images."""

    quality: int
    bits_per_item: float      # mean entropy-coded scan size, in bits
    compression_ratio: float  # 8-bit input bits / bits_per_item
    distortion: float         # mean |x - x_hat| per pixel, on [0, 1]


def encode(image: np.ndarray, quality: int) -> bytes:
    """A baseline JPEG file of a uint8 image, [H, W] grayscale or [H, W, 3] RGB."""
    if image.dtype != np.uint8:
        raise TypeError(f"JPEG input must be uint8 pixels, got {image.dtype}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"JPEG input must be [H, W] (grayscale) or [H, W, 3] (RGB), got shape {image.shape}")
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must lie in [1, 100], got {quality}")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, optimize=False, progressive=False)
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    """uint8 pixels of a JPEG file, in the layout ``encode`` takes."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def header_bytes(data: bytes) -> int:
    """Length of everything up to and including the SOS segment header, where the scan data starts."""
    if not data.startswith(_SOI):
        raise ValueError("not a JPEG file: it does not start with the SOI marker FFD8")
    position = len(_SOI)
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            raise ValueError(f"corrupt JPEG: expected a marker at byte {position}, found 0x{data[position]:02x}")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker in _STANDALONE:
            position += 2
            continue
        end = position + 2 + int.from_bytes(data[position + 2:position + 4], "big")
        if marker == _SOS:
            return end
        position = end
    raise ValueError("corrupt JPEG: no SOS marker (start of scan) found")


def payload_bytes(data: bytes) -> int:
    """Bytes of the entropy-coded scan: the file less its header (see ``header_bytes``) and the EOI marker."""
    if not data.endswith(_EOI):
        raise ValueError("truncated JPEG: it does not end with the EOI marker FFD9")
    return len(data) - header_bytes(data) - len(_EOI)


def rate_distortion(images: np.ndarray, qualities: Sequence[int] = QUALITIES) -> list[JpegPoint]:
    """Mean scan bits and distortion over uint8 ``images`` [N, H, W] or [N, H, W, 3], one point per quality."""
    images = np.asarray(images)
    if images.ndim not in (3, 4) or len(images) == 0:
        raise ValueError(f"images must be a non-empty [N, H, W] or [N, H, W, 3] array, got shape {images.shape}")
    input_bits = 8 * images[0].size
    points = []
    for quality in qualities:
        bits = distortion = 0.0
        for image in images:
            data = encode(image, quality)
            bits += 8 * payload_bytes(data)
            distortion += float(np.abs(decode(data).astype(np.float64) - image).mean()) / 255.0
        mean_bits = bits / len(images)
        points.append(JpegPoint(quality, mean_bits, input_bits / mean_bits, distortion / len(images)))
    return points


def mnist_rate_distortion(data_dir: str | Path, items: int = MNIST_ITEMS, qualities: Sequence[int] = QUALITIES) -> list[JpegPoint]:
    """``rate_distortion`` over the first ``items`` MNIST training images found under ``data_dir``."""
    from torchvision.datasets import MNIST  # imported here: the codec itself needs only Pillow

    try:
        images = MNIST(str(data_dir), train=True, download=False).data[:items].numpy()
    except RuntimeError as error:
        raise FileNotFoundError(
            f"MNIST not found under {data_dir} (expected {Path(data_dir) / 'MNIST' / 'raw'}/train-images-idx3-ubyte "
            f"and the other idx files); set LOSSY_MEMORY_DATA_DIR or pass --data-dir"
        ) from error
    return rate_distortion(images, qualities)
