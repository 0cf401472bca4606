"""The Decoder on 8 emulated CPU devices: logits and loss gradients on every mesh shape equal
the one-device result, and parameters are laid out as the rules say."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding

from medr3_jax.models import Decoder, preset
from medr3_jax.models.hf import assemble_decoder, flat_params
from medr3_jax.sharding import batch_spec, make_mesh, param_shardings

MESHES = [(1, 1, 1), (2, 4, 1), (1, 4, 2), (2, 2, 2)]


def _loss(model, tokens, positions, mask):
    """Mean next-token cross-entropy over real tokens (a stand-in for the RL loss)."""
    logits, _ = model(tokens, positions, mask)
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    nll = -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    weight = (mask[:, 1:] & mask[:, :-1]).astype(jnp.float32)
    return jnp.sum(nll * weight) / jnp.sum(weight)


def _batch():
    rng = np.random.default_rng(11)
    tokens = rng.integers(0, 256, (8, 12)).astype(np.int32)
    mask = np.ones_like(tokens, bool)
    mask[3, :5] = False
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0).astype(np.int32)
    return tokens, positions, mask


@pytest.fixture(scope="module")
def reference():
    config = preset("tiny", qkv_bias=True)  # biases exercise the head-sharded bias rule
    model = Decoder(config, rngs=nnx.Rngs(3))
    batch = _batch()
    logits = model(*batch)[0]
    grads = nnx.grad(_loss)(model, *batch)
    return model, np.asarray(logits), {k: np.asarray(v) for k, v in _flatten(nnx.to_pure_dict(grads)).items()}


def _flatten(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}/")
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_sharded_logits_and_grads_equal_one_device(reference, shape):
    model, want_logits, want_grads = reference
    mesh = make_mesh(dict(zip(("data", "fsdp", "tensor"), shape)), devices=jax.devices()[: int(np.prod(shape))])
    shardings = param_shardings(model.config, mesh)
    placed = {p: jax.device_put(v, shardings[p]) for p, v in flat_params(model).items()}
    sharded = assemble_decoder(model.config, placed)
    batch = [jax.device_put(x, NamedSharding(mesh, batch_spec(2))) for x in _batch()]

    logits = nnx.jit(lambda m, *b: m(*b)[0])(sharded, *batch)
    grads = nnx.jit(nnx.grad(_loss))(sharded, *batch)
    mask = np.asarray(batch[2])
    assert np.abs(np.asarray(logits) - want_logits)[mask].max() <= 1e-5
    for path, g in _flatten(nnx.to_pure_dict(grads)).items():
        np.testing.assert_allclose(np.asarray(g), want_grads[path], atol=1e-5, err_msg=path)

    # The layout is the rules': e.g. q_proj [L,D,N,H] has D over fsdp and heads over tensor.
    q = sharded.layers.q_proj[...]
    _, d, n, h = q.shape
    assert {s.data.shape for s in q.addressable_shards} == {(2, d // shape[1], n // shape[2], h)}
    emb = sharded.embedding[...]
    assert {s.data.shape for s in emb.addressable_shards} == {(256 // shape[2], 64 // shape[1])}
