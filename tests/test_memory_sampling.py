"""Replay sampling strategies pick the right items on constructed examples, with one scorer call per batch."""

from __future__ import annotations

import itertools

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from lossy_memory.memory import (
    ActiveDiverseSampling,
    ActiveSampling,
    BufferSample,
    CandidateScores,
    DiverseSampling,
    LosslessBuffer,
    MixedBuffer,
    RandomSampling,
    RecollectionBuffer,
)
from lossy_memory.memory.sampling import dpp_greedy, msss, take
from lossy_memory.runtime import CONFIG_DIR

C, L = 2, 65536


def numbered_buffer(n: int = 100) -> RecollectionBuffer:
    """Items whose first code is their id (stored in slot id)."""
    buffer = RecollectionBuffer(C, L, capacity=n, seed=4)
    ids = torch.arange(n)
    buffer.add(torch.stack([ids, torch.zeros_like(ids)], 1), ids % 10, 0)
    return buffer


class CountingScorer:
    """Scores = item id (higher id = harder); features given per id; counts calls and candidates seen."""

    def __init__(self, features: torch.Tensor | None = None):
        self.calls: list[int] = []
        self.features = features

    def __call__(self, candidates: BufferSample) -> CandidateScores:
        ids = candidates.data[:, 0]
        self.calls.append(len(ids))
        return CandidateScores(scores=ids.float(), features=None if self.features is None else self.features[ids])


def test_random_sampling_draws_n_stored_items_or_n_prior_codes():
    buffer = numbered_buffer()
    drawn = RandomSampling().select(buffer, 32)
    assert drawn.data.shape == (32, C) and torch.equal(drawn.data[:, 0], drawn.slots)
    codes = RandomSampling(source="codes").select(buffer, 32)
    assert codes.data.shape == (32, C) and codes.labels is None and codes.slots is None
    with pytest.raises(ValueError, match="source='codes' needs a RecollectionBuffer"):
        RandomSampling(source="codes").select(LosslessBuffer((1, 2, 2), capacity=1), 3)


def test_active_sampling_keeps_the_hardest_of_each_group_with_one_scorer_call():
    buffer, scorer = numbered_buffer(), CountingScorer()
    chosen = ActiveSampling(pool_factor=10).select(buffer, 16, scorer)
    assert scorer.calls == [160]
    assert chosen.data.shape == (16, C)
    # on given candidates: per group of k, the highest score
    scores = torch.tensor([0.1, 0.9, 0.3, 5.0, 4.0, 6.0, -1.0, -2.0, -0.5])
    candidates = BufferSample(torch.zeros(9, C, dtype=torch.long), None, None, None)
    picked = ActiveSampling(pool_factor=3).choose(candidates, 3, lambda _: CandidateScores(scores=scores))
    assert picked.tolist() == [1, 5, 8]


def test_active_sampling_prefers_hard_items_on_average():
    buffer = numbered_buffer()
    hard = ActiveSampling(pool_factor=10).select(buffer, 200, CountingScorer()).data[:, 0].float().mean()
    plain = RandomSampling().select(buffer, 200).data[:, 0].float().mean()
    assert hard > 80 > 60 > plain  # expected max of 10 uniform ids ~ 90, a uniform id ~ 49.5


def near_duplicates() -> tuple[torch.Tensor, torch.Tensor]:
    """(features, direction) of 50 candidates: directions 1..4 once each (ids 21..24), direction 0 a crowd of 46
    slightly perturbed copies."""
    basis = torch.eye(5, 8)
    crowd = basis[0] + 0.01 * torch.randn(45, 8, generator=torch.Generator().manual_seed(0))
    direction = torch.zeros(50, dtype=torch.long)
    direction[21:25] = torch.arange(1, 5)
    return torch.cat([basis[:1], crowd[:20], basis[1:], crowd[20:]]), direction


@pytest.mark.parametrize("method", ["msss", "dpp"])
def test_diverse_sampling_avoids_near_duplicates(method):
    features, direction = near_duplicates()
    candidates = BufferSample(torch.stack([torch.arange(50), torch.zeros(50, dtype=torch.long)], 1), None, None, None)
    scorer = CountingScorer(features)
    picked = DiverseSampling(pool_factor=10, method=method).choose(candidates, 5, scorer)
    assert scorer.calls == [50]
    assert sorted(direction[picked].tolist()) == [0, 1, 2, 3, 4]  # one of the crowd, every lone direction


def msss_by_hand(features: torch.Tensor, n: int) -> list[int]:
    picks = [0]
    while len(picks) < n:
        cost = {i: sum(float(features[i] @ features[j]) ** 2 for j in picks) for i in range(len(features)) if i not in picks}
        picks.append(min(cost, key=lambda i: (cost[i], i)))
    return picks


def dpp_by_brute_force(features: torch.Tensor, n: int) -> list[int]:
    """Greedy MAP by recomputing log det of every extended selection (what Chen et al.'s algorithm speeds up)."""
    kernel = features @ features.T
    picks: list[int] = []
    for _ in range(n):
        gain = {i: torch.logdet(kernel[picks + [i]][:, picks + [i]]) for i in range(len(features)) if i not in picks}
        picks.append(max(gain, key=lambda i: gain[i]))
    return picks


def test_greedy_algorithms_match_their_definitions():
    features = torch.randn(15, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert msss(features, 6).tolist() == msss_by_hand(features, 6)
    assert dpp_greedy(features, 5).tolist() == dpp_by_brute_force(features, 5)


def test_dpp_fills_up_with_unpicked_candidates_once_the_rank_is_spent():
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 1.0]], dtype=torch.float64)
    assert dpp_greedy(features, 4).tolist() == [2, 0, 1, 3]


def test_active_diverse_keeps_hard_then_diverse():
    # ids 0..49 score = id; the hard half is ids 25..49: directions 0..4 at 25..29, then a crowd along direction 0.
    # The easy half (tiny random features) would look most "diverse" to MSSS, but is never considered.
    features = torch.cat([0.01 * torch.randn(25, 8, generator=torch.Generator().manual_seed(2)), torch.eye(5, 8),
                          torch.eye(5, 8)[0] + 0.01 * torch.randn(20, 8, generator=torch.Generator().manual_seed(3))])
    candidates = BufferSample(torch.stack([torch.arange(50), torch.zeros(50, dtype=torch.long)], 1), None, None, None)
    scorer = CountingScorer(features)
    picked = ActiveDiverseSampling(pool_factor=10, hard_fraction=0.5).choose(candidates, 5, scorer)
    assert scorer.calls == [50]
    assert picked.min() >= 25 and sorted(features[picked].argmax(1).tolist()) == [0, 1, 2, 3, 4]


def test_strategies_work_on_a_mixed_buffer():
    buffer = MixedBuffer(4, 2, (1, 4, 4), budget_bits=5000, lossy_fraction=0.5)
    buffer.add((torch.rand(300, 1, 4, 4), torch.randint(2, (300, 4))), torch.randint(10, (300,)), 0)
    calls = []

    def scorer(candidates: BufferSample) -> CandidateScores:
        images = buffer.decode(lambda codes: codes.float().mean(1).view(-1, 1, 1, 1).expand(-1, 1, 4, 4), candidates.data)
        calls.append(len(images))
        return CandidateScores(scores=images.flatten(1).mean(1), features=images.flatten(1))

    chosen = ActiveDiverseSampling(pool_factor=4).select(buffer, 8, scorer)
    codes, images = chosen.data
    assert calls == [32] and len(codes) + len(images) == 8 and chosen.labels.shape == (8,)


def test_take_keeps_a_pairs_codes_first():
    sample = BufferSample((torch.tensor([[10], [11]]), torch.tensor([[20], [21], [22]])), torch.tensor([0, 1, 2, 3, 4]),
                          torch.zeros(5, dtype=torch.long), torch.tensor([0, 1, 2, 3, 4]))
    kept = take(sample, torch.tensor([4, 1, 2]))
    assert kept.data[0].tolist() == [[11]] and kept.data[1].tolist() == [[22], [20]]
    assert kept.labels.tolist() == [1, 4, 2] and kept.slots.tolist() == [1, 4, 2]


@pytest.mark.parametrize(
    "strategy, scorer, message",
    [
        (ActiveSampling(), None, "needs a scorer returning scores"),
        (DiverseSampling(), lambda c: CandidateScores(scores=torch.zeros(len(c.data))), r"features of shape \[m, d\] with m=40"),
        (ActiveSampling(), lambda c: CandidateScores(scores=torch.zeros(3)), r"scores of shape \[m\] with m=40"),
    ],
)
def test_missing_or_malformed_scores_raise(strategy, scorer, message):
    with pytest.raises(ValueError, match=message):
        strategy.select(numbered_buffer(), 4, scorer)


def test_invalid_settings_raise():
    for make, message in [(lambda: ActiveSampling(pool_factor=0), "pool_factor"), (lambda: DiverseSampling(method="kmeans"), "msss' or 'dpp"),
                          (lambda: RandomSampling(source="disk"), "source"), (lambda: ActiveDiverseSampling(hard_fraction=0), "hard_fraction")]:
        with pytest.raises(ValueError, match=message):
            make()
    with pytest.raises(ValueError, match="at least n=5 candidates"):
        DiverseSampling().choose(BufferSample(torch.zeros(3, 2), None, None, None), 5, lambda _: CandidateScores())


def test_buffer_and_sampling_configs_instantiate():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        stores = {"recollection": RecollectionBuffer, "lossless": LosslessBuffer, "mixed": MixedBuffer}
        strategies = {"random": RandomSampling, "codes": RandomSampling, "active": ActiveSampling, "diverse": DiverseSampling,
                      "diverse_dpp": DiverseSampling, "active_diverse": ActiveDiverseSampling}
        for (store, store_cls), (sampling, sampling_cls) in itertools.product(stores.items(), strategies.items()):
            cfg = compose(config_name="train", overrides=[f"+buffer={store}", f"buffer/sampling={sampling}"])
            assert isinstance(instantiate(cfg.buffer.store), store_cls)
            assert type(instantiate(cfg.buffer.sampling)) is sampling_cls
        assert instantiate(compose(config_name="train", overrides=["+buffer=recollection"]).buffer.sampling).source == "buffer"
