"""The KL term's reference: `PolicyTrainer.set_reference` freezes the weights, the update fills
`ref_logprobs` under them, and `loss/kl` equals the k1 estimate computed by hand from the two
models' own log-probs (numpy over the sampled tokens)."""

import numpy as np
import pytest
from flax import nnx

from medr3_jax.models.config import preset
from medr3_jax.models.transformer import Decoder
from medr3_jax.rl import PolicyLossConfig
from medr3_jax.trainer.step import OptimizerConfig, PolicyTrainer, TrainBatch, UpdateConfig, sequence_logprobs


def _batch(rows=4, width=24, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 256, (rows, width)).astype(np.int32)
    mask = np.ones((rows, width), bool)
    loss_mask = np.zeros((rows, width), bool)
    loss_mask[:, 10:] = True  # prompt first, then "sampled" tokens
    return TrainBatch(tokens=tokens, positions=np.tile(np.arange(width, dtype=np.int32), (rows, 1)), mask=mask,
                      loss_mask=loss_mask, old_logprobs=np.zeros((rows, width), np.float32),
                      advantages=rng.normal(size=rows).astype(np.float32))  # fmt: skip


def _logprobs(graphdef, params, batch):
    return np.asarray(sequence_logprobs(nnx.merge(graphdef, params), batch)[0])


def test_kl_against_the_frozen_start_weights_matches_hand_k1():
    model = Decoder(preset("tiny").replace(param_dtype="float32", compute_dtype="float32"), rngs=nnx.Rngs(0))
    loss = PolicyLossConfig(kl_coef=0.5, kl_estimator="k1")
    policy = PolicyTrainer(
        model, OptimizerConfig(learning_rate=1e-2), UpdateConfig(loss=loss, recompute_old_logprobs=True)
    )
    with pytest.raises(ValueError, match="set_reference"):
        policy.update(_batch())
    policy.set_reference(policy.params)
    start = _logprobs(policy.graphdef, policy.reference, _batch())

    first = policy.update(_batch(), seed=0)
    assert abs(first["loss/kl"]) < 1e-6  # the policy still is the reference

    batch = _batch(seed=1)
    now, ref = _logprobs(policy.graphdef, policy.params, batch), _logprobs(policy.graphdef, policy.reference, batch)
    on = batch.loss_mask
    hand_k1 = float(((now - ref) * on).sum() / on.sum())  # token-mean of log π_θ - log π_ref
    second = policy.update(batch, seed=1)
    assert abs(hand_k1) > 1e-4  # the first update moved the policy away from the reference
    np.testing.assert_allclose(second["loss/kl"], hand_k1, rtol=1e-4, atol=1e-7)
    # the reference stayed frozen through two updates (donated buffers never alias it)
    np.testing.assert_array_equal(_logprobs(policy.graphdef, policy.reference, _batch()), start)
