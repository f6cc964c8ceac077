"""Metrics kept apart from training code."""

from lossy_memory.metrics.code_usage import CodeUsagePerplexity

__all__ = ["CodeUsagePerplexity"]
