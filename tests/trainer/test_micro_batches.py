"""Gradient accumulation: one update of a minibatch gives the same loss, gradient norm and new
weights whether it is one micro-batch (its gradient taken directly, no accumulator) or split
into micro-batches accumulated by `lax.scan` with token-count weights."""

import jax
import numpy as np
import pytest
from flax import nnx

from medr3_jax.models.config import preset
from medr3_jax.models.transformer import Decoder
from medr3_jax.trainer.step import OptimizerConfig, PolicyTrainer, TrainBatch, UpdateConfig


def _batch(rows=4, width=24):
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, 256, (rows, width)).astype(np.int32)
    loss_mask = np.zeros((rows, width), bool)
    for row, start in enumerate((4, 10, 16, 20)):  # unequal token counts: unequal micro-batch weights
        loss_mask[row, start:] = True
    return TrainBatch(tokens=tokens, positions=np.tile(np.arange(width, dtype=np.int32), (rows, 1)),
                      mask=np.ones((rows, width), bool), loss_mask=loss_mask,
                      old_logprobs=rng.normal(-5.0, 0.5, (rows, width)).astype(np.float32),
                      advantages=np.array([1.0, -1.0, 0.5, -0.25], np.float32))  # fmt: skip


def _update(micro_batch):
    """(metrics, each weight's step) of one update. Adam with eps = 1 far above every gradient
    steps by lr * g / (|g| + 1) ~ lr * g: the step compares the gradients element by element
    (at the default eps, near-zero gradients would step by about +-lr whatever their rounding)."""
    model = Decoder(preset("tiny"), rngs=nnx.Rngs(0))  # f32
    before = [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]
    opt = OptimizerConfig(learning_rate=1.0, eps=1.0, weight_decay=0.0)
    policy = PolicyTrainer(model, opt, UpdateConfig(micro_batch=micro_batch))
    metrics = policy.update(_batch())
    steps = [np.asarray(x) - b for x, b in zip(jax.tree.leaves(policy.params), before)]
    # w + step is rounded to w's f32 spacing: the step read back is exact to about that much
    return metrics, steps, [2 * np.spacing(np.abs(b).max()) for b in before]


@pytest.mark.parametrize("micro_batch", [1, 2])
def test_one_micro_batch_equals_the_accumulated_scan(micro_batch):
    whole, whole_steps, rounding = _update(None)
    split, split_steps, _ = _update(micro_batch)
    assert whole["train/grad_norm"] > 0 and all(np.abs(s).max() > 0 for s in whole_steps)
    np.testing.assert_allclose(split["loss/total"], whole["loss/total"], rtol=1e-5)
    np.testing.assert_allclose(split["train/grad_norm"], whole["train/grad_norm"], rtol=1e-5)
    for a, b, ulp in zip(split_steps, whole_steps, rounding):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=ulp)
