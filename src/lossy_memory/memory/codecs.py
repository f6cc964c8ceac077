"""What an episodic memory keeps of an image, behind one interface: encode, decode, bits per item, a buffer to hold it.

* ``LosslessCodec``: uint8 images (8 bits per pixel and channel);
* ``RecollectionCodec``: the codes of a DiscreteVAE (c * ceil(log2 l) bits), decoded by it when drawn;
* ``MixedCodec``: both, one bit budget split between them (``lossy_fraction`` of it on codes).

``make_codec`` turns the config's ``kind`` string into one of these, once; nothing else switches on the kind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lossy_memory.memory.budget import code_bits
from lossy_memory.memory.buffers import Attributes, ExperienceBuffer, LosslessBuffer, MixedBuffer, RecollectionBuffer, quantize_images
from lossy_memory.memory.replay import evaluating

KINDS = ("lossless", "recollection", "mixed")


class Codec:
    """Base class. ``generator``: the DiscreteVAE the codec encodes and decodes with (None: lossless)."""

    kind: str
    generator: nn.Module | None = None

    def payload_bits(self, image_shape: Sequence[int]) -> int:
        """Bits of one stored item's payload (images or codes, without label, task id or attributes)."""
        raise NotImplementedError

    def packed_bits(self, image_shape: Sequence[int]) -> int:
        """The part of ``payload_bits`` packed into one bitstream (a budget leaves room for its last partial byte)."""
        return 0

    def encode(self, x: torch.Tensor) -> Any:
        """What the buffer stores for float images x in [0, 1]."""
        raise NotImplementedError

    def decode(self, buffer: ExperienceBuffer, data: Any, device: torch.device) -> torch.Tensor:
        """Images in [0, 1] on ``device`` for ``data`` drawn from ``buffer``."""
        with evaluating(self.generator):
            return buffer.decode(None if self.generator is None else self.generator.decode, data).to(device)

    def new_buffer(self, image_shape: Sequence[int], budget_bits: float | None, capacity: int | None, **common) -> ExperienceBuffer:
        raise NotImplementedError


class LosslessCodec(Codec):
    kind = "lossless"

    def payload_bits(self, image_shape: Sequence[int]) -> int:
        return 8 * math.prod(image_shape)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """8-bit images of x clamped to [0, 1] (what the buffer keeps)."""
        return quantize_images(x.detach().clamp(0, 1))

    def decode(self, buffer: ExperienceBuffer, data: Any, device: torch.device) -> torch.Tensor:
        return buffer.decode(None, data).to(device)  # no generator, no gradients to switch off

    def new_buffer(self, image_shape, budget_bits, capacity, **common) -> ExperienceBuffer:
        return LosslessBuffer(image_shape, capacity=capacity, budget_bits=budget_bits, **common)


class RecollectionCodec(Codec):
    kind = "recollection"

    def __init__(self, generator: nn.Module):
        self.generator = generator

    def payload_bits(self, image_shape: Sequence[int]) -> int:
        return code_bits(self.generator.latent.c, self.generator.latent.l)

    packed_bits = payload_bits

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        with evaluating(self.generator):
            return self.generator.encode(x)

    def new_buffer(self, image_shape, budget_bits, capacity, **common) -> ExperienceBuffer:
        return RecollectionBuffer(self.generator.latent.c, self.generator.latent.l, capacity=capacity, budget_bits=budget_bits, **common)


class MixedCodec(RecollectionCodec):
    kind = "mixed"

    def __init__(self, generator: nn.Module, lossy_fraction: float):
        super().__init__(generator)
        self.lossy_fraction = float(lossy_fraction)

    def payload_bits(self, image_shape: Sequence[int]) -> int:
        raise ValueError("a mixed memory has no single item size")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return quantize_images(x.detach().clamp(0, 1)), super().encode(x)

    def new_buffer(self, image_shape, budget_bits, capacity, **common) -> ExperienceBuffer:
        if capacity is not None:
            raise ValueError("a mixed memory is sized by bits, not items")
        latent = self.generator.latent
        return MixedBuffer(latent.c, latent.l, image_shape, budget_bits, self.lossy_fraction, **common)


def make_codec(kind: str, generator: nn.Module | None, lossy_fraction: float = 0.5) -> Codec:
    """The codec of a memory ``kind`` (clear errors for a missing or unwanted generator)."""
    if kind not in KINDS:
        raise ValueError(f"memory.kind must be one of {KINDS}, got {kind!r}")
    if kind == "lossless":
        if generator is not None:
            raise ValueError("memory.kind='lossless' keeps images and uses no generator: set memory.generator=null")
        return LosslessCodec()
    if generator is None:
        raise ValueError(f"memory.kind={kind!r} keeps DiscreteVAE codes: give memory.generator (a DiscreteVAE)")
    if not all(hasattr(generator, name) for name in ("encode", "decode", "latent")):
        raise ValueError(f"memory.generator must be a DiscreteVAE (encode/decode/latent), got {type(generator).__name__}")
    return RecollectionCodec(generator) if kind == "recollection" else MixedCodec(generator, lossy_fraction)


__all__ = ["KINDS", "Attributes", "Codec", "LosslessCodec", "MixedCodec", "RecollectionCodec", "make_codec"]
