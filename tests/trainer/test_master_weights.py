"""f32 master weights for a bf16 model: AdamW's first step moves each weight by the learning
rate (|g / (|g| + eps)| = 1), which bf16 weights updated in place cannot hold at lr 1e-6;
the sampler gets the master weights cast back to bf16; a checkpoint of master weights loads
into a bf16 model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from medr3_jax.models.config import preset
from medr3_jax.models.transformer import Decoder
from medr3_jax.trainer.checkpoints import Checkpointer, config_to_dict, load_params_from_checkpoint
from medr3_jax.trainer.step import OptimizerConfig, PolicyTrainer, TrainBatch, UpdateConfig

LR = 1e-6


def _batch(rows=4, width=24, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 256, (rows, width)).astype(np.int32)
    loss_mask = np.zeros((rows, width), bool)
    loss_mask[:, 10:] = True
    return TrainBatch(tokens=tokens, positions=np.tile(np.arange(width, dtype=np.int32), (rows, 1)),
                      mask=np.ones((rows, width), bool), loss_mask=loss_mask,
                      old_logprobs=np.zeros((rows, width), np.float32),
                      advantages=np.array([1.0, -1.0, 0.5, -0.5], np.float32))  # fmt: skip


def _bf16_model():
    return Decoder(preset("tiny").replace(param_dtype="bfloat16", compute_dtype="bfloat16"), rngs=nnx.Rngs(0))


def _flat(params) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(p): np.asarray(x, np.float32) for p, x in jax.tree_util.tree_leaves_with_path(params)}


def _one_update(master_dtype):
    """(policy, weights before, each weight's step) of the q and up projections, one update."""
    model = _bf16_model()
    start = _flat(nnx.state(model, nnx.Param))
    # eps far below every gradient: Adam's first step is then lr * sign(g) (eps=1e-8 would shorten
    # the steps of this tiny model's ~1e-8 gradients)
    opt = OptimizerConfig(learning_rate=LR, weight_decay=0.0, eps=1e-14, master_dtype=master_dtype)
    policy = PolicyTrainer(model, opt, UpdateConfig())
    policy.update(_batch())
    after = _flat(policy.params)
    keys = [k for k in start if "q_proj" in k or "up_proj" in k]
    before = np.concatenate([start[k].ravel() for k in keys])
    return policy, before, np.concatenate([after[k].ravel() for k in keys]) - before


def test_f32_master_weights_take_the_learning_rate_step_bf16_weights_lose_it():
    policy, _, steps = _one_update("float32")
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(policy.params))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(policy.opt_state) if x.ndim)
    assert (steps != 0).mean() > 0.99  # every weight with a gradient moved ...
    np.testing.assert_allclose(np.abs(steps[steps != 0]) / LR, 1.0, rtol=0.01)  # ... by lr (f32 spacing ~2e-9)
    sampled = policy.sampler_params()
    for master, copy in zip(jax.tree.leaves(policy.params), jax.tree.leaves(sampled)):
        assert copy.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(copy), np.asarray(master.astype(jnp.bfloat16)))

    # Updated in place, a bf16 weight keeps its value unless it is tiny: from |w| = 1e-3 the
    # spacing (7.6e-6) is more than twice the step, and the step rounds away.
    _, before, in_place = _one_update(None)
    typical = np.abs(before) >= 1e-3
    assert typical.mean() > 0.95
    assert not in_place[typical].any()


def test_f32_models_train_on_their_own_weights():
    model = Decoder(preset("tiny"), rngs=nnx.Rngs(0))  # float32
    policy = PolicyTrainer(model, OptimizerConfig(), UpdateConfig())
    assert policy.sampler_params() is policy.params  # no copy


def test_master_weights_checkpoint_loads_into_the_bf16_model(tmp_path):
    model = _bf16_model()
    policy = PolicyTrainer(model, OptimizerConfig(learning_rate=1e-3), UpdateConfig())
    policy.update(_batch())
    ckpt = Checkpointer(tmp_path / "checkpoints")
    rng = np.asarray(jax.random.key_data(jax.random.key(0)))
    state = {"params": policy.params.to_pure_dict(), "opt_state": policy.opt_state, "rng": rng}
    ckpt.save(1, state, {"model_config": config_to_dict(model.config)}, force=True)
    ckpt.wait()
    ckpt.close()
    loaded, _ = load_params_from_checkpoint(tmp_path / "checkpoints")
    want = _flat(policy.sampler_params())
    got = nnx.state(loaded, nnx.Param)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(got))
    assert _flat(got).keys() == want.keys()
    for k, v in _flat(got).items():
        np.testing.assert_array_equal(v, want[k])


def test_unknown_master_dtype_names_the_knob():
    with pytest.raises(ValueError, match="OptimizerConfig.master_dtype='int8'"):
        OptimizerConfig(master_dtype="int8")
