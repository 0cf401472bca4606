"""Sampling methods against a numpy reference: empirical frequencies over many draws match the
renormalised softmax of the kept tokens; nothing outside top-k / the nucleus is ever drawn."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medr3_jax.sampling.methods import (
    GREEDY,
    SamplingParams,
    filtered_logits,
    first_argmax,
    sample,
    token_logprobs,
)

LOGITS = np.array([2.0, 1.5, 1.4, 0.3, 0.0, -0.5, -1.0, -3.0, 0.9, 0.1], np.float32)
DRAWS = 40_000


def reference_probs(logits: np.ndarray, p: SamplingParams) -> np.ndarray:
    """numpy: softmax(logits/T) restricted to top-k, then to the smallest set with mass >= top_p."""
    z = logits.astype(np.float64) / p.temperature
    keep = np.ones_like(z, bool)
    if p.top_k:
        keep &= z >= np.sort(z)[::-1][p.top_k - 1]
    probs = np.where(keep, np.exp(z - z.max()), 0.0)
    probs /= probs.sum()
    if p.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        mass = np.cumsum(probs[order])
        n = int(np.searchsorted(mass, p.top_p - 1e-12)) + 1  # smallest prefix reaching top_p
        nucleus = np.zeros_like(keep)
        nucleus[order[:n]] = True
        probs = np.where(nucleus, probs, 0.0)
        probs /= probs.sum()
    return probs


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1.0),
        SamplingParams(temperature=0.5),
        SamplingParams(temperature=1.3, top_k=3),
        SamplingParams(temperature=1.0, top_p=0.7),
        SamplingParams(temperature=0.8, top_k=5, top_p=0.8),
    ],
    ids=str,
)
def test_empirical_frequencies_match_renormalised_softmax(params):
    logits = jnp.broadcast_to(jnp.asarray(LOGITS), (DRAWS, LOGITS.size))
    draws = np.asarray(jax.jit(sample, static_argnums=2)(logits, jax.random.key(0), params))
    freq = np.bincount(draws, minlength=LOGITS.size) / DRAWS
    want = reference_probs(LOGITS, params)
    # 5 standard errors of a binomial proportion (+ a float floor): false alarm < 1e-5 per token.
    tol = 5 * np.sqrt(want * (1 - want) / DRAWS) + 1e-4
    assert np.all(np.abs(freq - want) <= tol), (freq, want)
    assert np.all(freq[want == 0] == 0)  # never outside top-k / the nucleus
    np.testing.assert_allclose(
        np.asarray(jax.nn.softmax(filtered_logits(jnp.asarray(LOGITS[None]), params)))[0], want, atol=1e-6
    )


def test_top_p_never_leaves_the_nucleus_on_random_logits():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(256, 50)).astype(np.float32) * 3
    params = SamplingParams(temperature=1.0, top_p=0.6)
    draws = np.asarray(sample(jnp.asarray(logits), jax.random.key(3), params))
    for row, token in zip(logits, draws):
        assert reference_probs(row, params)[token] > 0


def test_greedy_is_argmax_and_logprob_is_log_softmax():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(4, 30)).astype(np.float32)
    tokens = np.asarray(sample(jnp.asarray(logits), jax.random.key(0), GREEDY))
    np.testing.assert_array_equal(tokens, logits.argmax(-1))
    logp = np.asarray(token_logprobs(jnp.asarray(logits), jnp.asarray(tokens), SamplingParams(temperature=0.5)))
    z = logits / 0.5
    want = z[np.arange(4), tokens] - np.log(np.exp(z).sum(-1))
    np.testing.assert_allclose(logp, want, atol=1e-5)


def test_first_argmax_equals_numpy_argmax_with_ties_and_nans():
    rng = np.random.default_rng(4)
    logits = rng.integers(-3, 4, size=(64, 257)).astype(np.float32)  # many tied maxima per row
    logits[5, [7, 200]] = np.nan  # numpy and jnp.argmax: the first NaN wins
    logits[6, :] = -np.inf
    logits[7, 100] = np.inf
    got = np.asarray(jax.jit(first_argmax)(jnp.asarray(logits)))
    np.testing.assert_array_equal(got, logits.argmax(-1))
    assert got[5] == 7 and got[6] == 0 and got.dtype == np.int32


def test_same_seed_same_draws():
    logits = jnp.broadcast_to(jnp.asarray(LOGITS), (64, LOGITS.size))
    p = SamplingParams(temperature=1.0, top_p=0.9)
    a, b = (np.asarray(sample(logits, jax.random.key(5), p)) for _ in range(2))
    np.testing.assert_array_equal(a, b)


def test_bad_params_name_the_knob():
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1.0)
