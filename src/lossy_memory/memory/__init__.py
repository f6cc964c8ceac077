"""Recollection memory: bit-exact code packing, budgeted reservoir buffers, and replay sampling strategies."""

from lossy_memory.memory.budget import BudgetProblem, Candidate, capacity_for_budget, generator_parameters, recollections_for_lossless
from lossy_memory.memory.coresets import forgetting_scores, herding, k_center, random_real, select_coreset
from lossy_memory.memory.buffers import BufferSample, ExperienceBuffer, LosslessBuffer, MixedBuffer, RecollectionBuffer
from lossy_memory.memory.replay import ReplayInterleaver
from lossy_memory.memory.packing import bits_per_variable, bytes_per_item, pack_codes, unpack_codes
from lossy_memory.memory.sampling import (
    ActiveDiverseSampling,
    ActiveSampling,
    CandidateScores,
    DiverseSampling,
    RandomSampling,
    SamplingStrategy,
)
from lossy_memory.memory.synthetic import SyntheticSet, evaluate_synthetic_set, load_synthetic_set

__all__ = [
    "ActiveDiverseSampling", "ActiveSampling", "BudgetProblem", "BufferSample", "Candidate", "CandidateScores",
    "DiverseSampling", "ExperienceBuffer", "LosslessBuffer", "MixedBuffer", "RandomSampling", "RecollectionBuffer", "ReplayInterleaver",
    "SamplingStrategy", "bits_per_variable", "bytes_per_item", "capacity_for_budget", "generator_parameters",
    "pack_codes", "recollections_for_lossless", "unpack_codes",
    "SyntheticSet", "evaluate_synthetic_set", "forgetting_scores", "herding", "k_center", "load_synthetic_set",
    "random_real", "select_coreset",
]
