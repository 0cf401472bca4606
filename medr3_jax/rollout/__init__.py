"""The multi-turn retrieval rollout: the engine over sampler + retriever (the search protocol
itself lives in `medr3_jax.protocol`)."""

from medr3_jax.rollout.engine import DOCUMENT, PAD, PROMPT, SAMPLED, Retrieval, Rollout, RolloutConfig, RolloutEngine

__all__ = [
    "DOCUMENT",
    "PAD",
    "PROMPT",
    "SAMPLED",
    "Retrieval",
    "Rollout",
    "RolloutConfig",
    "RolloutEngine",
]
