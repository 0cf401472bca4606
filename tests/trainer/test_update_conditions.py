"""The policy update under the conditions of a real run, each against an independent reference:
on a data=2,fsdp=2,tensor=2 mesh (8 emulated devices) it gives one device's parameters; on a
rollout that searched, its loss is a float64 numpy recomputation over the SAMPLED tokens only;
with epochs x minibatches > 1 the ratio moves and clipping acts, as numpy says it must for each
update; a NaN in one micro-batch skips the step and leaves every weight and moment as it was."""

import dataclasses
import math

import jax
import numpy as np
import pytest
from flax import nnx

from medr3_jax.models.loading import load_model
from medr3_jax.rl import PolicyLossConfig
from medr3_jax.rollout import DOCUMENT, SAMPLED
from medr3_jax.sharding import make_mesh, param_shardings
from medr3_jax.trainer.step import OptimizerConfig, PolicyTrainer, TrainBatch, UpdateConfig
from tests.rollout.test_engine import CONFIG, run


def _numpy_logp(model, batch: TrainBatch) -> np.ndarray:
    """[R, W] float64 log-prob of each token given the ones before it (position 0: 0), from the
    model's logits by a float64 log-softmax."""
    logits = np.asarray(model(batch.tokens, batch.positions, batch.mask)[0], np.float64)[:, :-1]
    shifted = logits - logits.max(-1, keepdims=True)
    logsm = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    picked = np.take_along_axis(logsm, np.asarray(batch.tokens)[:, 1:, None], -1)[..., 0]
    return np.concatenate([np.zeros_like(picked[:, :1]), picked], axis=1)


def _numpy_pg(logp, old, adv, mask, cfg: PolicyLossConfig):
    """(token-mean clipped loss, clip fraction, mean ratio) over `mask`, token by token in float64
    (PPO clip both ways, dual clip for A < 0; as in `rl.losses.policy_loss`'s docstring)."""
    losses, clipped, ratios = [], [], []
    for r, t in zip(*np.nonzero(mask)):
        ratio = math.exp(logp[r, t] - old[r, t])
        a = float(adv[r])
        unclipped, clip = -a * ratio, -a * min(max(ratio, 1 - cfg.clip_low), 1 + cfg.clip_high)
        v = max(unclipped, clip)
        if cfg.dual_clip is not None and a < 0:
            v = min(v, -a * cfg.dual_clip)
        losses.append(v)
        clipped.append(clip > unclipped)
        ratios.append(ratio)
    return float(np.mean(losses)), float(np.mean(clipped)), float(np.mean(ratios))


def _batch(rows=8, width=24, seed=3) -> TrainBatch:
    rng = np.random.default_rng(seed)
    loss_mask = np.zeros((rows, width), bool)
    for row in range(rows):
        loss_mask[row, 4 + 2 * row :] = True  # unequal token counts per row
    return TrainBatch(tokens=rng.integers(0, 256, (rows, width)).astype(np.int32),
                      positions=np.tile(np.arange(width, dtype=np.int32), (rows, 1)),
                      mask=np.ones((rows, width), bool), loss_mask=loss_mask,
                      old_logprobs=rng.normal(-5.6, 0.3, (rows, width)).astype(np.float32),
                      advantages=rng.normal(0, 1, rows).astype(np.float32))  # fmt: skip


def _params(policy: PolicyTrainer) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(policy.params)]


def test_two_updates_on_a_data_fsdp_tensor_mesh_give_the_one_device_parameters():
    """Tolerance: the mesh splits the f32 sums of the forward and of the gradient over devices
    (another order of additions, about 1e-7 relative per sum). Adam with eps = 1 above every
    gradient steps by lr * g / (|g| + 1) ~ g at lr = 1, so the weights move by the gradients
    themselves (every matrix by > 1e-3 here) and the order of additions shows up at the f32 ulp
    of the weights: atol 2e-7 (measured on 2 CPU cores: at most 6e-8)."""
    opt = OptimizerConfig(learning_rate=1.0, eps=1.0)
    update = UpdateConfig(micro_batch=4)
    mesh = make_mesh("data=2,fsdp=2,tensor=2")
    one = PolicyTrainer(load_model("random:tiny")[0], opt, update)
    sharded_model = load_model("random:tiny", shardings=lambda c: param_shardings(c, mesh))[0]
    sharded = PolicyTrainer(sharded_model, opt, update, mesh)
    assert all(len(x.sharding.device_set) == 8 for x in jax.tree.leaves(sharded.params))
    assert any(not x.sharding.is_fully_replicated for x in jax.tree.leaves(sharded.params))
    start = _params(one)
    for seed in (3, 4):  # two updates, on two batches
        batch = _batch(seed=seed)
        m_one, m_sharded = one.update(batch), sharded.update(batch)
        np.testing.assert_allclose(m_sharded["loss/total"], m_one["loss/total"], rtol=1e-5)
        np.testing.assert_allclose(m_sharded["train/grad_norm"], m_one["train/grad_norm"], rtol=1e-5)
    moved = [np.abs(a - b).max() for a, b in zip(_params(one), start)]
    assert min(moved) > 1e-3  # every weight matrix took real steps
    for a, b in zip(_params(sharded), _params(one)):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-7)


@pytest.fixture(scope="module")
def searched_rollout():
    """A scripted rollout on the byte vocabulary: row 0 searched twice (two <document> blocks
    inserted), row 1 answered at once."""
    scripts = [["a<search> insulin </search>", ("doc", "insulin"), "b<search>beta</search>", ("doc", "beta"),
                "c</think><answer>B</answer>\0"], ["plain</think><answer>A</answer>\0"]]  # fmt: skip
    rollout, _ = run(["Q1 <think>", "Q2 <think>"], scripts, CONFIG)
    return rollout


def test_the_loss_of_an_update_on_a_searched_rollout_counts_sampled_tokens_only(searched_rollout):
    rollout = searched_rollout
    assert rollout.search_counts.tolist() == [2, 0] and (rollout.provenance == DOCUMENT).sum() > 20
    np.testing.assert_array_equal(rollout.loss_mask, rollout.provenance == SAMPLED)
    model = load_model("random:tiny")[0]
    cfg = PolicyLossConfig()
    batch = TrainBatch(tokens=rollout.tokens, positions=rollout.positions, mask=rollout.mask,
                       loss_mask=rollout.loss_mask, old_logprobs=np.zeros_like(rollout.logprobs),
                       advantages=np.array([1.0, -0.5], np.float32))  # fmt: skip
    logp = _numpy_logp(model, batch)
    rng = np.random.default_rng(0)  # old log-probs near the policy's: ratios around 1, both clip sides
    old = (logp + rng.normal(0, 0.3, logp.shape)).astype(np.float32)
    old[~rollout.loss_mask] = 7.0  # garbage where nothing may count
    batch = dataclasses.replace(batch, old_logprobs=old)
    want, want_clip, _ = _numpy_pg(logp, old.astype(np.float64), batch.advantages, rollout.loss_mask, cfg)
    real = rollout.mask & (np.arange(rollout.mask.shape[1]) >= rollout.prompt_lengths[:, None])
    with_documents, _, _ = _numpy_pg(logp, logp, batch.advantages, real, cfg)  # documents counted: another loss
    assert abs(with_documents - want) > 1e-3

    policy = PolicyTrainer(model, OptimizerConfig(learning_rate=1e-3), UpdateConfig(loss=cfg))
    metrics = policy.update(batch)  # the loss of the weights before the update
    np.testing.assert_allclose(metrics["loss/total"], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["loss/clip_fraction"], want_clip, rtol=1e-5)
    assert 0 < want_clip < 1


def test_epochs_and_minibatches_move_the_ratio_and_clip_as_numpy_says():
    """2 epochs x 2 minibatches = 4 updates. The old log-probs are the policy's own, so update 1
    sees ratio 1 (nothing clipped); each later update sees the weights the earlier ones moved
    (lr 3e-2), and numpy's ratio and clip fraction from those weights are the step's metrics."""
    model = load_model("random:tiny")[0]
    cfg = PolicyLossConfig()
    policy = PolicyTrainer(model, OptimizerConfig(learning_rate=3e-2), UpdateConfig(epochs=2, minibatches=2,
                           loss=cfg))  # fmt: skip
    batch = _batch()
    batch = dataclasses.replace(batch, old_logprobs=_numpy_logp(model, batch).astype(np.float32))
    seen = []  # (weights before, rows, metrics) of each optimizer update
    step = policy._step

    def recording(params, opt_state, part, weights, micro):
        before = nnx.merge(policy.graphdef, jax.tree.map(np.array, params))  # a copy: params are donated
        out = step(params, opt_state, part, weights, micro=micro)
        seen.append((before, jax.tree.map(np.asarray, part), {k: float(v) for k, v in out[2].items()}))
        return out

    policy._step = recording
    policy.update(batch, seed=7)
    assert len(seen) == 4
    order = np.random.default_rng(7)  # rows shuffled per epoch from the seed, 4 per minibatch
    expected_rows = [p[k * 4 : (k + 1) * 4] for p in (order.permutation(8), order.permutation(8)) for k in range(2)]
    for k, (before, part, metrics) in enumerate(seen):
        np.testing.assert_array_equal(part.tokens, batch.tokens[expected_rows[k]])
        logp = _numpy_logp(before, part)
        loss, clip, ratio = _numpy_pg(logp, part.old_logprobs.astype(np.float64), part.advantages,
                                      part.loss_mask, cfg)  # fmt: skip
        np.testing.assert_allclose(metrics["loss/total"], loss, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(metrics["loss/ratio_mean"], ratio, rtol=1e-5)
        np.testing.assert_allclose(metrics["loss/clip_fraction"], clip, atol=1e-6)
        if k == 0:
            assert abs(ratio - 1) < 1e-5 and clip == 0
    assert all(abs(m["loss/ratio_mean"] - 1) > 1e-3 for _, _, m in seen[1:])
    assert max(m["loss/clip_fraction"] for _, _, m in seen[1:]) > 0


def test_a_nan_in_one_micro_batch_skips_the_step_and_changes_nothing():
    policy = PolicyTrainer(load_model("random:tiny")[0], OptimizerConfig(learning_rate=1e-2),
                           UpdateConfig(micro_batch=2))  # fmt: skip
    batch = _batch()
    old = np.array(batch.old_logprobs)
    old[5, 20] = np.nan  # row 5 is in the third of four micro-batches, on a sampled token
    assert batch.loss_mask[5, 20]
    params, moments = _params(policy), [np.asarray(x) for x in jax.tree.leaves(policy.opt_state)]
    metrics = policy.update(dataclasses.replace(batch, old_logprobs=old))
    assert metrics["train/skipped"] == 1 and metrics["train/updates"] == 1 and not np.isfinite(metrics["loss/total"])
    for a, b in zip(_params(policy), params):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(policy.opt_state), moments):  # Adam's moments and count too
        np.testing.assert_array_equal(np.asarray(a), b)
    clean = policy.update(batch)  # the next finite batch trains
    assert clean["train/skipped"] == 0 and any(not np.array_equal(a, b) for a, b in zip(_params(policy), params))
