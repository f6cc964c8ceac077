"""Metrics kept apart from training code."""

from lossy_memory.metrics.code_usage import CodeUsagePerplexity

__all__ = ["CodeUsagePerplexity"]
from lossy_memory.metrics.continual import (  # noqa: E402
    AccuracyMatrix,
    average_incremental_accuracy,
    backward_transfer,
    final_average_accuracy,
    forgetting,
    forward_transfer,
    summarize,
    task_masked_logits,
)

__all__ += [
    "AccuracyMatrix", "average_incremental_accuracy", "backward_transfer", "final_average_accuracy", "forgetting",
    "forward_transfer", "summarize", "task_masked_logits",
]
