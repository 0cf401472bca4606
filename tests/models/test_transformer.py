"""Decoder logits against transformers (torch, f32) and cached decode against full forward."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from medr3_jax.models.config import ModelConfig, preset, rope_inv_freq
from medr3_jax.models.hf import SafetensorsDir, load_decoder
from medr3_jax.models.transformer import Decoder, KVCache, rope_table, rope_tables
from tests.models import hf_reference as ref


def padded_batch(vocab: int, lengths: list[int], width: int, *, left: bool, seed: int = 0):
    """Random tokens with per-row lengths, padded left or right; positions count real tokens."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, (len(lengths), width)).astype(np.int32)
    mask = np.zeros((len(lengths), width), bool)
    positions = np.zeros((len(lengths), width), np.int32)
    for b, n in enumerate(lengths):
        cols = np.arange(width - n, width) if left else np.arange(n)
        mask[b, cols] = True
        positions[b, cols] = np.arange(n)
    tokens[~mask] = 0
    return tokens, mask, positions


@pytest.fixture(scope="module", params=["llama3", "qwen2"])
def hf_pair(request, tmp_path_factory):
    """(torch model, our Decoder loaded from its safetensors dir, dir)."""
    hf_config = ref.tiny_llama3_config() if request.param == "llama3" else ref.tiny_qwen2_config()
    torch_model = ref.build_hf_model(hf_config, seed=1)
    path = ref.save_hf_model(torch_model, str(tmp_path_factory.mktemp(request.param)))
    config = ModelConfig.from_hf_dir(path)
    return torch_model, load_decoder(SafetensorsDir(path), config), path


def test_config_reads_family_switches(hf_pair):
    _, model, _ = hf_pair
    c = model.config
    if c.family == "llama":
        assert c.rope_scaling is not None and c.rope_scaling.rope_type == "llama3"
        assert (c.num_heads, c.num_kv_heads, c.head_dim, c.qkv_bias, c.tie_word_embeddings) == (4, 2, 12, False, False)
    else:
        assert (c.qkv_bias, c.tie_word_embeddings, c.num_kv_heads) == (True, True, 1)
        assert c.rope_theta == 1e6


@pytest.mark.parametrize("left", [True, False])
def test_logits_match_transformers_on_padded_batch(hf_pair, left):
    torch_model, model, _ = hf_pair
    tokens, mask, positions = padded_batch(model.config.vocab_size, [9, 5, 1, 7], 9, left=left, seed=3)
    ours, _ = model(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask))
    theirs = ref.hf_logits(torch_model, tokens, mask, positions)
    diff = np.abs(np.asarray(ours) - theirs)[mask]
    assert diff.max() <= 1e-4, diff.max()


def same_weights(model: Decoder, **changes) -> Decoder:
    """A Decoder with `model`'s parameters and a changed config (implementation switches)."""
    other = Decoder(model.config.replace(**changes), rngs=nnx.Rngs(0))
    nnx.update(other, nnx.state(model, nnx.Param))
    return other


@pytest.mark.parametrize(
    "impl",
    [{}, {"cache_attention": "dense"}, {"cache_attention": "dense", "layer_unroll": 2}, {"layer_unroll": 2}],
    ids=["blockwise", "dense", "dense-unrolled", "blockwise-unrolled"],
)
def test_cached_decode_equals_full_forward(hf_pair, impl):
    """Prefill a left-padded prompt into the cache, then decode one token at a time."""
    _, model, _ = hf_pair
    model = same_weights(model, **impl)
    tokens, mask, positions = padded_batch(model.config.vocab_size, [12, 8, 10], 12, left=True, seed=5)
    full, _ = model(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask))
    prefill = 7
    cache = KVCache.create(model.config, batch=3, max_len=16)
    step = nnx.jit(lambda m, t, p, k, c: m(t, p, k, kv_cache=c))
    logits, cache = step(model, tokens[:, :prefill], positions[:, :prefill], mask[:, :prefill], cache)
    pieces = [np.asarray(logits)]
    for t in range(prefill, tokens.shape[1]):
        logits, cache = step(model, tokens[:, t : t + 1], positions[:, t : t + 1], mask[:, t : t + 1], cache)
        pieces.append(np.asarray(logits))
    cached = np.concatenate(pieces, axis=1)
    np.testing.assert_array_equal(np.asarray(cache.length), [12, 12, 12])
    assert np.abs(cached - np.asarray(full))[mask].max() <= 1e-5


@pytest.mark.parametrize("cache_attention", ["blockwise", "dense"])
def test_cached_decode_on_per_layer_weights_and_rope_table_equals_full_forward(hf_pair, cache_attention):
    """`layer_weights` (the Sampler's decode_weights="per_layer"): the layers run unrolled on
    per-layer slices of the stacks; with `rope_table` (as the Sampler's decode loop calls it),
    RoPE angles are gathered by position. Prefill and decode steps equal the full forward."""
    _, model, _ = hf_pair
    model = same_weights(model, cache_attention=cache_attention)
    tokens, mask, positions = padded_batch(model.config.vocab_size, [12, 8, 10], 12, left=True, seed=6)
    full, _ = model(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask))
    with pytest.raises(ValueError, match="layer_weights serve cached calls only"):
        model(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask), layer_weights=model.layers.per_layer())
    cache = KVCache.create(model.config, batch=3, max_len=16)
    table = rope_table(model.config, 16)
    step = nnx.jit(lambda m, t, p, k, c: m(t, p, k, kv_cache=c, layer_weights=m.layers.per_layer(), rope_table=table))
    pieces = []
    for lo, hi in [(0, 7)] + [(t, t + 1) for t in range(7, 12)]:
        logits, cache = step(model, tokens[:, lo:hi], positions[:, lo:hi], mask[:, lo:hi], cache)
        pieces.append(np.asarray(logits))
    assert np.abs(np.concatenate(pieces, axis=1) - np.asarray(full))[mask].max() <= 1e-5


def test_rope_table_rows_are_the_angles_of_their_positions():
    config = preset("tiny")
    positions = np.array([[0, 5, 17], [3, 3, 31]], np.int32)
    sin, cos = rope_tables(config, jnp.asarray(positions))
    table_sin, table_cos = rope_table(config, 32)
    assert table_sin.shape == (32, config.head_dim // 2)
    np.testing.assert_allclose(np.asarray(table_sin)[positions], np.asarray(sin), rtol=0, atol=1e-7)
    np.testing.assert_allclose(np.asarray(table_cos)[positions], np.asarray(cos), rtol=0, atol=1e-7)
    angles = positions[..., None].astype(np.float64) * rope_inv_freq(config)  # numpy reference
    np.testing.assert_allclose(np.asarray(table_sin)[positions], np.sin(angles), atol=2e-6)


def test_remat_keeps_values_and_gradients():
    config = preset("tiny")
    model = Decoder(config, rngs=nnx.Rngs(0))
    remat = Decoder(config.replace(remat="full"), rngs=nnx.Rngs(0))
    tokens, mask, positions = padded_batch(config.vocab_size, [6, 4], 6, left=False)

    def loss(m):
        logits, _ = m(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask))
        return jnp.mean(jax.nn.logsumexp(logits, -1))

    g1, g2 = nnx.grad(loss)(model), nnx.grad(loss)(remat)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_bfloat16_params_and_compute_stay_close_to_f32():
    config = preset("tiny")
    f32 = Decoder(config, rngs=nnx.Rngs(0))
    bf16 = Decoder(config.replace(param_dtype="bfloat16", compute_dtype="bfloat16"), rngs=nnx.Rngs(1))
    nnx.update(bf16, jax.tree.map(lambda x: x.astype(jnp.bfloat16), nnx.state(f32, nnx.Param)))
    tokens, mask, positions = padded_batch(config.vocab_size, [6, 4], 6, left=False)
    a, _ = f32(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask))
    b, _ = bf16(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask))
    assert bf16.layers.q_proj[...].dtype == jnp.bfloat16 and b.dtype == jnp.float32
    assert np.abs(np.asarray(a) - np.asarray(b))[mask].max() < 0.05 * np.abs(np.asarray(a)).max()


def test_blockwise_attention_equals_dense_on_live_slots():
    """Rows whose first blocks are all padding, a partly filled cache, GQA: same as dense."""
    from medr3_jax.models.transformer import KV_BLOCK, attention, blockwise_attention

    rng = np.random.default_rng(0)
    b, t, n, kv, h, s = 3, 2, 4, 2, 8, 4 * KV_BLOCK
    q, k, v = (
        jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in [(b, t, n, h), (b, s, kv, h), (b, s, kv, h)]
    )
    live = 3 * KV_BLOCK - 5
    mask = np.zeros((b, t, s), bool)
    mask[0, :, 10:live] = True
    mask[1, :, 2 * KV_BLOCK + 7 : live] = True  # blocks 0 and 1 fully masked
    mask[2, :, :40] = True
    mask[:, 0, live - 1] = False  # causal: the first query does not see the last slot
    dense = attention(q, k, v, jnp.asarray(mask))
    keys, values = jnp.einsum("BSKH->BKHS", k), jnp.einsum("BSKH->BKSH", v)  # the cache's layout
    blocked = blockwise_attention(q, keys, values, jnp.asarray(mask), jnp.int32(live))
    np.testing.assert_allclose(np.asarray(blocked), np.asarray(dense), atol=1e-5)
