"""KV-cache sampling: prefill, an in-jit decode loop with token-level stop strings, and
appending retrieved tokens into the live cache; the state is a value carried between turns."""

from medr3_jax.sampling.methods import GREEDY, SamplingParams, filtered_logits, sample, token_logprobs
from medr3_jax.sampling.sampler import DecodeOutput, Sampler, SamplerState, StopReason
from medr3_jax.sampling.stops import StopTable

__all__ = [
    "GREEDY",
    "DecodeOutput",
    "Sampler",
    "SamplerState",
    "SamplingParams",
    "StopReason",
    "StopTable",
    "filtered_logits",
    "sample",
    "token_logprobs",
]
