"""`UpdateConfig.logits_chunk`: the loss and log-prob passes make the logits a slice of positions
at a time. Against the whole-sequence path (and a float64 numpy log_softmax of the model's own
logits): the same log-probs, entropies, gradients and update, for slices that divide the width
and one that does not; and the compiled gradient's scratch memory stays below one copy of the
[R, T, V] f32 logits, which the whole-sequence gradient needs several of."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from medr3_jax.models.config import preset
from medr3_jax.models.transformer import Decoder
from medr3_jax.rl import chunked_token_logprobs_and_entropy, token_logprobs_and_entropy
from medr3_jax.trainer.step import OptimizerConfig, PolicyTrainer, TrainBatch, UpdateConfig, sequence_logprobs

ROWS, WIDTH = 3, 40


def _config(**overrides):
    return preset("tiny").replace(param_dtype="float32", compute_dtype="float32", **overrides)


def _batch(vocab: int, rows: int = ROWS, width: int = WIDTH) -> TrainBatch:
    rng = np.random.default_rng(0)
    lengths = np.array([width, width - 7, width - 15][:rows])
    mask = np.arange(width)[None] < lengths[:, None]
    loss_mask = mask & (np.arange(width)[None] >= 10)
    return TrainBatch(
        tokens=np.where(mask, rng.integers(3, vocab, (rows, width)), 0).astype(np.int32),
        positions=np.where(mask, np.arange(width)[None], 0).astype(np.int32), mask=mask, loss_mask=loss_mask,
        old_logprobs=np.where(loss_mask, rng.normal(-3.0, 0.3, (rows, width)), 0).astype(np.float32),
        advantages=rng.normal(size=rows).astype(np.float32),
    )  # fmt: skip


@pytest.mark.parametrize("chunk", [8, 13, WIDTH - 1])
def test_chunked_logprobs_equal_log_softmax_of_the_models_logits(chunk):
    model = Decoder(_config(), rngs=nnx.Rngs(0))
    batch = _batch(model.config.vocab_size)
    T = 0.7
    logp, entropy = (np.asarray(x) for x in sequence_logprobs(model, batch, T, logits_chunk=chunk))
    logits, _ = model(batch.tokens, batch.positions, batch.mask)
    scaled = np.asarray(logits, np.float64)[:, :-1] / T
    shifted = scaled - scaled.max(-1, keepdims=True)
    ref_all = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    ref = np.take_along_axis(ref_all, batch.tokens[:, 1:, None], axis=-1)[..., 0]
    np.testing.assert_array_equal(logp[:, 0], 0.0)
    np.testing.assert_allclose(logp[:, 1:], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(entropy[:, 1:], -(np.exp(ref_all) * ref_all).sum(-1), rtol=1e-5, atol=1e-5)
    whole = np.asarray(sequence_logprobs(model, batch, T, logits_chunk=0)[0])
    np.testing.assert_allclose(logp, whole, rtol=1e-6, atol=1e-6)


def test_chunked_gradient_equals_the_whole_sequence_gradient():
    rng = np.random.default_rng(1)
    hidden = jnp.asarray(rng.normal(size=(2, 21, 16)), jnp.float32)
    weight = jnp.asarray(rng.normal(size=(16, 50)), jnp.float32)
    tokens = jnp.asarray(rng.integers(0, 50, (2, 21)), jnp.int32)

    def loss(w, h, chunk):
        logp, ent = chunked_token_logprobs_and_entropy(lambda x: x @ w, h, tokens, chunk)
        return jnp.sum(logp * jnp.arange(21)) + 0.3 * jnp.sum(ent)

    reference = jax.grad(lambda w, h: loss(w, h, 0), argnums=(0, 1))(weight, hidden)
    direct = jax.grad(lambda w, h: jnp.sum(token_logprobs_and_entropy(h @ w, tokens)[0] * jnp.arange(21))
                      + 0.3 * jnp.sum(token_logprobs_and_entropy(h @ w, tokens)[1]), argnums=(0, 1))(weight, hidden)  # fmt: skip
    for chunk in (4, 5, 20):
        got = jax.grad(lambda w, h, c=chunk: loss(w, h, c), argnums=(0, 1))(weight, hidden)
        for g, r, d in zip(got, reference, direct):
            np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=2e-5, atol=2e-5)
            np.testing.assert_allclose(np.asarray(r), np.asarray(d), rtol=2e-5, atol=2e-5)


def test_a_chunked_update_moves_the_weights_as_the_whole_sequence_update():
    results = []
    for chunk in (0, 8):
        model = Decoder(_config(), rngs=nnx.Rngs(0))
        policy = PolicyTrainer(model, OptimizerConfig(learning_rate=1e-3), UpdateConfig(logits_chunk=chunk))
        metrics = policy.update(_batch(model.config.vocab_size))
        results.append((jax.tree.leaves(policy.params), metrics["loss/total"]))
    (whole, loss_whole), (chunked, loss_chunked) = results
    assert loss_chunked == pytest.approx(loss_whole, rel=1e-5)
    moved = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(whole, jax.tree.leaves(
        nnx.state(Decoder(_config(), rngs=nnx.Rngs(0)), nnx.Param))))  # fmt: skip
    assert moved > 1e-4  # the update did move the weights
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_the_chunked_gradient_never_holds_the_whole_logits():
    """What the vocabulary adds to the compiled gradient's scratch memory (two vocabulary sizes,
    everything else equal): several [R, T, V] f32 tensors on the whole-sequence path (logits,
    log_softmax, probabilities), less than half of one in slices of 16 positions."""

    def scratch(vocab: int, chunk: int) -> int:
        graphdef, params = nnx.split(Decoder(_config(vocab_size=vocab), rngs=nnx.Rngs(0)))
        batch = _batch(vocab, rows=2, width=256)

        def loss(p):
            logp, _ = sequence_logprobs(nnx.merge(graphdef, p), batch, 1.0, logits_chunk=chunk)
            return jnp.sum(logp * batch.loss_mask)

        return jax.jit(jax.grad(loss)).lower(params).compile().memory_analysis().temp_size_in_bytes

    small, large = 8192, 32768
    one_copy = 2 * 255 * (large - small) * 4  # [R, T, V_large - V_small] f32
    whole = scratch(large, 0) - scratch(small, 0)
    chunked = scratch(large, 16) - scratch(small, 16)
    print(f"scratch added by {large - small} more vocabulary entries: whole {whole / 2**20:.1f} MiB, "
          f"slices of 16 {chunked / 2**20:.1f} MiB, one [R,T,V] f32 {one_copy / 2**20:.1f} MiB")  # fmt: skip
    assert whole >= 2.5 * one_copy
    assert chunked < 0.5 * one_copy
