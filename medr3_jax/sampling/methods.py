"""Greedy, temperature, top-k and top-p (nucleus) sampling on f32 logits [B,V].

    params = SamplingParams(temperature=0.7, top_p=0.9)
    token = sample(logits, key, params)                  # [B] int32
    logp = token_logprobs(logits, token, params)         # [B] f32, log softmax(logits / T)

`filtered_logits` is the distribution actually sampled from (renormalised over the kept
tokens); tests compare empirical frequencies against its softmax.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from medr3_jax.config_types import check_field_types

Array = jax.Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """temperature T (0 = greedy), top_k k (0 = off), top_p p (1 = off). Hashable: a jit static."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"SamplingParams.top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


GREEDY = SamplingParams(temperature=0.0)


def filtered_logits(logits: Array, params: SamplingParams) -> Array:
    """logits / T with everything outside the top-k and then the top-p nucleus set to -inf."""
    logits = logits.astype(jnp.float32) / (params.temperature or 1.0)
    if params.top_k:
        kth = jax.lax.top_k(logits, params.top_k)[0][:, -1:]
        logits = jnp.where(logits >= kth, logits, -jnp.inf)
    if params.top_p < 1.0:
        ordered = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(ordered, axis=-1)
        # Keep the smallest prefix whose mass reaches p: a token stays if the mass before it < p.
        keep = (jnp.cumsum(probs, axis=-1) - probs) < params.top_p
        cutoff = jnp.min(jnp.where(keep, ordered, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits >= cutoff, logits, -jnp.inf)
    return logits


def first_argmax(logits: Array) -> Array:
    """jnp.argmax over the last axis ([B,V] -> [B] int32: the first maximal index, or the
    first NaN of a row holding one), as a max and the smallest index that matches it. Plain
    reductions, which XLA:CPU runs ~3x faster than the (value, index) reduce that `argmax`
    lowers to (1.2 vs 3.6 ms over [32, 49152] on the 2-core CI machine, in every decode step)."""
    nan = jnp.isnan(logits)
    top = jnp.max(logits, axis=-1, keepdims=True)  # NaN-propagation of max is backend-specific
    hit = jnp.where(jnp.any(nan, axis=-1, keepdims=True), nan, logits == top)
    index = jnp.arange(logits.shape[-1], dtype=jnp.int32)
    return jnp.min(jnp.where(hit, index, logits.shape[-1]), axis=-1)


def sample(logits: Array, key: Array, params: SamplingParams) -> Array:
    """Next tokens [B] int32 from logits [B,V]."""
    if params.greedy:
        return first_argmax(logits)
    return jax.random.categorical(key, filtered_logits(logits, params), axis=-1).astype(jnp.int32)


def token_logprobs(logits: Array, tokens: Array, params: SamplingParams) -> Array:
    """f32 log-prob [B] of `tokens` under softmax(logits / T) — the policy the trainer scores
    (before top-k/top-p truncation; T = 1 for greedy)."""
    scaled = logits.astype(jnp.float32) / (params.temperature or 1.0)
    logp = jax.nn.log_softmax(scaled, axis=-1)
    return jnp.take_along_axis(logp, tokens[:, None], axis=-1)[:, 0]
