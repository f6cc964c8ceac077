"""Bottlenecks between an encoder and a decoder: what an experience is stored as."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CategoricalLatent(nn.Module):
    """c categorical variables of l values each, sampled with the Gumbel-softmax.

    The forward pass is a hard one-hot sample; gradients flow through the soft relaxation
    (straight-through, Jang et al. 2017). An item costs c * ceil(log2 l) bits (eq. 1 of the paper).
    The temperature is fixed unless ``anneal_rate`` > 0: then tau(step) = max(tau_min, tau * exp(-rate * step)).

    The encoder's logits are layer-normalised with a learned gain that starts at ``init_logit_std``. Freshly
    initialised encoders emit near-zero logits, so the first hard samples are coin flips that carry nothing
    about the image; the decoder learns to ignore them and an L1-trained VAE stalls at the all-black image.
    Starting from confident (std 3) logits, codes are informative from the first step (MNIST, c=168: test
    distortion 0.048 after 600 steps against 0.067 without).
    """

    def __init__(self, c: int, l: int, tau: float = 1.0, tau_min: float = 0.5, anneal_rate: float = 0.0,
                 init_logit_std: float = 3.0):
        super().__init__()
        if int(c) != c or c < 1:
            raise ValueError(f"latent.c must be an integer >= 1 (number of categorical variables), got {c!r}")
        if int(l) != l or l < 2:
            raise ValueError(f"latent.l must be an integer >= 2 (values per variable), got {l!r}")
        if tau <= 0 or tau_min <= 0 or anneal_rate < 0:
            raise ValueError(f"latent temperatures must be > 0 and anneal_rate >= 0, got tau={tau}, tau_min={tau_min}, anneal_rate={anneal_rate}")
        if init_logit_std <= 0:
            raise ValueError(f"latent.init_logit_std must be > 0, got {init_logit_std}")
        self.c, self.l = int(c), int(l)
        self.tau, self.tau_min, self.anneal_rate = float(tau), float(tau_min), float(anneal_rate)
        self.normalize = nn.LayerNorm(self.c * self.l)
        nn.init.constant_(self.normalize.weight, init_logit_std)

    @property
    def num_inputs(self) -> int:
        """Width of the encoder output this bottleneck reads (one logit per variable and value)."""
        return self.c * self.l

    @property
    def num_outputs(self) -> int:
        """Width of the decoder input this bottleneck writes (one-hot per variable)."""
        return self.c * self.l

    @property
    def bits_per_item(self) -> int:
        return self.c * math.ceil(math.log2(self.l))

    def temperature(self, step: int) -> float:
        if self.anneal_rate == 0:
            return self.tau
        return max(self.tau_min, self.tau * math.exp(-self.anneal_rate * step))

    def forward(self, logits: torch.Tensor, step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (one-hot sample flattened to [N, c*l], KL to the uniform prior per item [N])."""
        logits = self.normalize(logits).view(-1, self.c, self.l)
        sample = F.gumbel_softmax(logits, tau=self.temperature(step), hard=True, dim=-1)
        log_q = F.log_softmax(logits, dim=-1)
        kl = (log_q.exp() * (log_q + math.log(self.l))).sum(dim=(1, 2))
        return sample.flatten(1), kl

    def codes(self, logits: torch.Tensor) -> torch.Tensor:
        """Deterministic codes (most likely value of each variable): LongTensor [N, c]."""
        return self.normalize(logits).view(-1, self.c, self.l).argmax(dim=-1)

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """One-hot decoder input [N, c*l] for integer codes [N, c]."""
        if codes.dim() != 2 or codes.shape[1] != self.c:
            raise ValueError(f"codes must have shape [N, {self.c}], got {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.l):
            raise ValueError(f"codes must lie in [0, {self.l}), got values in [{int(codes.min())}, {int(codes.max())}]")
        return F.one_hot(codes.long(), self.l).flatten(1).float()

    def extra_repr(self) -> str:
        return f"c={self.c}, l={self.l}, tau={self.tau}, bits_per_item={self.bits_per_item}"


class GaussianLatent(nn.Module):
    """h Gaussian variables (the continuous-VAE baseline); stored as h float32 means: 32*h bits."""

    def __init__(self, h: int):
        super().__init__()
        if int(h) != h or h < 1:
            raise ValueError(f"latent.h must be an integer >= 1, got {h!r}")
        self.h = int(h)

    @property
    def num_inputs(self) -> int:
        return 2 * self.h

    @property
    def num_outputs(self) -> int:
        return self.h

    @property
    def bits_per_item(self) -> int:
        return 32 * self.h

    def forward(self, params: torch.Tensor, step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = params.chunk(2, dim=1)
        sample = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
        kl = 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).sum(dim=1)
        return sample, kl

    def codes(self, params: torch.Tensor) -> torch.Tensor:
        return params.chunk(2, dim=1)[0]

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.dim() != 2 or codes.shape[1] != self.h:
            raise ValueError(f"codes must have shape [N, {self.h}], got {tuple(codes.shape)}")
        return codes.float()

    def extra_repr(self) -> str:
        return f"h={self.h}, bits_per_item={self.bits_per_item}"
