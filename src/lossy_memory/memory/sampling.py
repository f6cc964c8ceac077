"""Which recollections to replay (paper, section 3.2 and Appendix D), one small class per strategy.

Every strategy draws ``pool_factor * n`` candidates from a buffer (stored items, or codes from the
generator's prior with ``source="codes"``), asks the scorer about all of them in ONE call (the caller decodes
them and runs its networks once on the whole batch), and keeps n:

* RandomSampling: no scorer; the uniform draws themselves ("buffer sampling" / "code sampling").
* ActiveSampling: per wanted item, the hardest of its k candidates (highest score, e.g. student-teacher
  disagreement).
* DiverseSampling: n of the k*n candidates that are far apart under dot-product similarity of the scorer's
  features: the Minimum Sum of Squared Similarities greedy (add, one at a time, the candidate whose squared
  similarities to those already kept sum lowest) or greedy DPP MAP inference (Chen, Zhang & Zhou, 2018).
* ActiveDiverseSampling: the hardest ``hard_fraction`` of the candidates, then n diverse ones among them.

``select(buffer_or_candidates, n, scorer)`` returns the kept items as a BufferSample; ``choose(candidates, n,
scorer)`` the indices into a candidate batch one already holds.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import NamedTuple

import torch

from lossy_memory.memory.buffers import BufferSample, ExperienceBuffer, RecollectionBuffer


class CandidateScores(NamedTuple):
    """What a scorer says about m candidates: ``scores`` [m] (higher = more worth replaying) and/or ``features`` [m, d]."""

    scores: torch.Tensor | None = None
    features: torch.Tensor | None = None


Scorer = Callable[[BufferSample], CandidateScores]


class SamplingStrategy(ABC):
    """Draw ``pool_factor * n`` candidates, keep n. ``source``: "buffer" (stored items) or "codes" (prior draws)."""

    needs: tuple[str, ...] = ()  # what the scorer must return: "scores", "features"

    def __init__(self, pool_factor: int = 1, source: str = "buffer"):
        if isinstance(pool_factor, bool) or int(pool_factor) != pool_factor or pool_factor < 1:
            raise ValueError(f"pool_factor (candidates per wanted item) must be an integer >= 1, got {pool_factor!r}")
        if source not in ("buffer", "codes"):
            raise ValueError(f"source must be 'buffer' (stored items) or 'codes' (uniform codes), got {source!r}")
        self.pool_factor, self.source = int(pool_factor), source

    def draw(self, buffer: ExperienceBuffer, n: int) -> BufferSample:
        """The candidates for n wanted items."""
        m = self.pool_factor * n
        if self.source == "buffer":
            return buffer.sample(m)
        if not isinstance(buffer, RecollectionBuffer):
            raise ValueError(f"source='codes' needs a RecollectionBuffer (codes of known c, l), got {type(buffer).__name__}")
        return BufferSample(buffer.sample_codes(m), None, None, None)

    def select(self, source: ExperienceBuffer | BufferSample, n: int, scorer: Scorer | None = None) -> BufferSample:
        """n items: drawn from a buffer and filtered, or filtered from given candidates."""
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise ValueError(f"number of items to select must be an integer >= 1, got {n!r}")
        candidates = self.draw(source, int(n)) if isinstance(source, ExperienceBuffer) else source
        return self.keep(candidates, int(n), scorer)

    def keep(self, candidates: BufferSample, n: int, scorer: Scorer | None = None) -> BufferSample:
        """The n candidates ``choose`` keeps."""
        return take(candidates, self.choose(candidates, n, scorer))

    def choose(self, candidates: BufferSample, n: int, scorer: Scorer | None = None) -> torch.Tensor:
        """Indices (LongTensor [n]) of the candidates kept; the scorer is called once, on all of them."""
        m = count(candidates)
        if m < n:
            raise ValueError(f"{type(self).__name__} needs at least n={n} candidates, got {m}")
        said = self._ask(scorer, candidates, m) if self.needs else CandidateScores()
        return self._choose(said, n).cpu()

    def _ask(self, scorer: Scorer | None, candidates: BufferSample, m: int) -> CandidateScores:
        if scorer is None:
            raise ValueError(f"{type(self).__name__} needs a scorer returning {' and '.join(self.needs)}")
        said = scorer(candidates)
        for need in self.needs:
            value = getattr(said, need, None)
            dims = 1 if need == "scores" else 2
            if not isinstance(value, torch.Tensor) or value.dim() != dims or value.shape[0] != m:
                shape = "[m]" if dims == 1 else "[m, d]"
                raise ValueError(f"{type(self).__name__}: the scorer must return {need} of shape {shape} with m={m}, "
                                 f"got {getattr(value, 'shape', value)!r}")
        return said

    @abstractmethod
    def _choose(self, said: CandidateScores, n: int) -> torch.Tensor: ...


class RandomSampling(SamplingStrategy):
    """Uniform replay: stored items ("buffer sampling") or uniform codes ("code sampling"); candidates are already uniform draws."""

    def __init__(self, source: str = "buffer"):
        super().__init__(1, source)

    def _choose(self, said: CandidateScores, n: int) -> torch.Tensor:
        return torch.arange(n)

    def keep(self, candidates: BufferSample, n: int, scorer: Scorer | None = None) -> BufferSample:
        """n draws are already the n items wanted: nothing to re-index."""
        return candidates if count(candidates) == n else super().keep(candidates, n, scorer)


class ActiveSampling(SamplingStrategy):
    """Of each wanted item's k candidates (consecutive groups of m // n), the one with the highest score."""

    needs = ("scores",)

    def __init__(self, pool_factor: int = 10, source: str = "buffer"):
        super().__init__(pool_factor, source)

    def _choose(self, said: CandidateScores, n: int) -> torch.Tensor:
        scores = said.scores
        group = scores.shape[0] // n
        rows = scores[: group * n].reshape(n, group)
        return torch.arange(n, device=scores.device) * group + rows.argmax(dim=1)


class DiverseSampling(SamplingStrategy):
    """n mutually dissimilar candidates out of k*n under dot-product similarity of the scorer's features.

    ``method="msss"``: the Minimum Sum of Squared Similarities greedy. It starts from the first candidate (a uniform
    draw) and repeatedly adds the candidate whose squared similarities to the items already kept sum lowest.
    ``method="dpp"``: greedy MAP inference of the DPP with kernel F F^T (Chen et al., 2018, Algorithm 1),
    adding the candidate that most increases log det; once the kernel's rank is exhausted, the rest are the
    first unpicked candidates. ``normalize``: cosine instead of raw dot products.
    """

    needs = ("features",)

    def __init__(self, pool_factor: int = 10, method: str = "msss", normalize: bool = False, source: str = "buffer"):
        super().__init__(pool_factor, source)
        if method not in ("msss", "dpp"):
            raise ValueError(f"method must be 'msss' or 'dpp', got {method!r}")
        self.method, self.normalize = method, bool(normalize)

    def _choose(self, said: CandidateScores, n: int) -> torch.Tensor:
        return self._diverse(said.features, n)

    def _diverse(self, features: torch.Tensor, n: int) -> torch.Tensor:
        features = features.detach().double()
        if self.normalize:
            features = torch.nn.functional.normalize(features, dim=1)
        return (msss if self.method == "msss" else dpp_greedy)(features, n)


class ActiveDiverseSampling(DiverseSampling):
    """The hardest ``hard_fraction`` of the k*n candidates (at least n), then n diverse ones among them."""

    needs = ("scores", "features")

    def __init__(self, pool_factor: int = 10, hard_fraction: float = 0.5, method: str = "msss", normalize: bool = False,
                 source: str = "buffer"):
        super().__init__(pool_factor, method, normalize, source)
        if not 0 < hard_fraction <= 1:
            raise ValueError(f"hard_fraction must be in (0, 1], got {hard_fraction}")
        self.hard_fraction = float(hard_fraction)

    def _choose(self, said: CandidateScores, n: int) -> torch.Tensor:
        m = said.scores.shape[0]
        hard = said.scores.topk(max(n, math.ceil(self.hard_fraction * m))).indices
        return hard[self._diverse(said.features[hard], n).to(hard.device)]


def msss(features: torch.Tensor, n: int) -> torch.Tensor:
    """Greedy Minimum Sum of Squared Similarities: indices of n rows of ``features`` [m, d], the first row first."""
    m = features.shape[0]
    penalty = torch.zeros(m, dtype=features.dtype, device=features.device)
    taken = torch.zeros(m, dtype=torch.bool, device=features.device)
    picks = torch.empty(n, dtype=torch.long, device=features.device)
    for step in range(n):
        pick = penalty.masked_fill(taken, math.inf).argmin()
        picks[step] = pick
        taken[pick] = True
        penalty += (features @ features[pick]).square()
    return picks


def dpp_greedy(features: torch.Tensor, n: int, eps: float = 1e-10) -> torch.Tensor:
    """Fast greedy MAP inference for the DPP with kernel L = F F^T (Chen et al., 2018): indices of n rows.

    Keeps, per candidate, its Cholesky row against the picks so far (c_i) and the remaining gain d_i^2; each step
    costs O(m * picks). When no candidate adds more than ``eps`` (the kernel's rank is spent) the remaining
    picks are the first candidates not yet taken.
    """
    m = features.shape[0]
    gains = features.square().sum(dim=1)
    rows = features.new_zeros(n, m)
    taken = torch.zeros(m, dtype=torch.bool, device=features.device)
    picks: list[int] = []
    while len(picks) < n:
        pick = int(gains.masked_fill(taken, -math.inf).argmax())
        if gains[pick] <= eps:
            break
        k = len(picks)
        picks.append(pick)
        taken[pick] = True
        e = (features @ features[pick] - rows[:k, pick] @ rows[:k]) / gains[pick].sqrt()
        rows[k] = e
        gains = gains - e.square()
    rest = torch.nonzero(~taken).squeeze(1)[: n - len(picks)]
    return torch.cat([torch.tensor(picks, dtype=torch.long, device=features.device), rest])


def count(candidates: BufferSample) -> int:
    """Number of items in a BufferSample (codes, images, or a MixedBuffer's (codes, images) pair)."""
    data = candidates.data
    return data[0].shape[0] + data[1].shape[0] if isinstance(data, tuple) else data.shape[0]


def take(candidates: BufferSample, index: torch.Tensor) -> BufferSample:
    """The candidates at ``index``, as a BufferSample of the same kind (a pair keeps its codes' items first)."""
    data = candidates.data

    def pick(t: torch.Tensor | None, at: torch.Tensor) -> torch.Tensor | None:
        return None if t is None else t[at.to(t.device)]

    def rest(at: torch.Tensor) -> tuple:
        return (*(pick(t, at) for t in candidates[1:4]), {k: pick(v, at) for k, v in candidates.attributes.items()})

    if not isinstance(data, tuple):
        return BufferSample(data[index.to(data.device)], *rest(index))
    split = data[0].shape[0]
    index = torch.cat([index[index < split], index[index >= split]])
    return BufferSample((pick(data[0], index[index < split]), pick(data[1], index[index >= split] - split)), *rest(index))
