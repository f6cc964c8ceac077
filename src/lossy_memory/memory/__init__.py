"""Everything about storing and recalling experience: bit-exact code packing, budgeted reservoir buffers with per-slot
attributes, codecs (lossless, recollections, mixed), the episodic memory of continual learning and its online
generator, replay sampling strategies and mixing, coresets and synthetic sets."""

from lossy_memory.memory.budget import BudgetProblem, Candidate, capacity_for_budget, generator_parameters, recollections_for_lossless
from lossy_memory.memory.coresets import forgetting_scores, herding, k_center, random_real, select_coreset
from lossy_memory.memory.buffers import BufferSample, ExperienceBuffer, LosslessBuffer, MixedBuffer, RecollectionBuffer, Writes
from lossy_memory.memory.codecs import Codec, LosslessCodec, MixedCodec, RecollectionCodec, make_codec
from lossy_memory.memory.episodic import EpisodicMemory, Replayed, Written
from lossy_memory.memory.generator import OnlineGenerator
from lossy_memory.memory.replay import mix_replayed
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
    "ActiveDiverseSampling", "ActiveSampling", "BudgetProblem", "BufferSample", "Candidate", "CandidateScores", "Codec",
    "EpisodicMemory", "LosslessCodec", "MixedCodec", "OnlineGenerator", "RecollectionCodec", "Replayed", "Writes", "Written",
    "make_codec", "mix_replayed",
    "DiverseSampling", "ExperienceBuffer", "LosslessBuffer", "MixedBuffer", "RandomSampling", "RecollectionBuffer",
    "SamplingStrategy", "bits_per_variable", "bytes_per_item", "capacity_for_budget", "generator_parameters",
    "pack_codes", "recollections_for_lossless", "unpack_codes",
    "SyntheticSet", "evaluate_synthetic_set", "forgetting_scores", "herding", "k_center", "load_synthetic_set",
    "random_real", "select_coreset",
]
