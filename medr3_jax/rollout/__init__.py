"""The multi-turn retrieval rollout: the search protocol and the engine over sampler + retriever."""

from medr3_jax.rollout.engine import DOCUMENT, PAD, PROMPT, SAMPLED, Retrieval, Rollout, RolloutConfig, RolloutEngine
from medr3_jax.rollout.protocol import DocumentBlocks, MalformedSearch, parse_search_turn

__all__ = [
    "DOCUMENT",
    "PAD",
    "PROMPT",
    "SAMPLED",
    "DocumentBlocks",
    "MalformedSearch",
    "Retrieval",
    "Rollout",
    "RolloutConfig",
    "RolloutEngine",
    "parse_search_turn",
]
