"""Group-relative advantages (no critic): each prompt is sampled G times and every sample is
scored against its own group.

    rewards   = jnp.array([1.0, 0.0, 2.0, 2.0])
    group_ids = jnp.array([0, 0, 1, 1])
    group_advantages(rewards, group_ids, 2)          -> [0.7071, -0.7071, 0.0, 0.0]
    token_advantages(adv, loss_mask)                 -> adv[:, None] * loss_mask

R rows (samples), T tokens. Pure jax.numpy, f32 math.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

ESTIMATORS: tuple[str, ...] = ("grpo", "drgrpo", "rloo")


@functools.partial(jax.jit, static_argnames=("num_groups", "estimator"))
def group_advantages(
    rewards: jax.Array,
    group_ids: jax.Array,
    num_groups: int,
    *,
    estimator: str = "grpo",
    eps: float = 1e-6,
) -> jax.Array:
    """Advantage of each row relative to its group.

    Args:
      rewards: [R] scalar reward r of each row.
      group_ids: [R] int group g of each row, in [0, num_groups). A row whose id is outside that
        range (padding) belongs to no group and gets advantage 0.
      num_groups: number of groups (static).
      estimator (static):
        "grpo"   (r - mean_g) / (std_g + eps), std_g the unbiased (ddof=1) std; G = 1 -> 0.
        "drgrpo" r - mean_g (Dr. GRPO: no std normalisation).
        "rloo"   r - mean of the other G - 1 members = G / (G - 1) (r - mean_g); G = 1 -> 0.
      eps: added to std_g ("grpo" only), the paper's 1e-6.

    Returns: [R] f32 advantages. A group with equal rewards gets exactly 0.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {estimator!r}; known: {list(ESTIMATORS)}")
    rewards = jnp.asarray(rewards, jnp.float32)
    group_ids = jnp.asarray(group_ids, jnp.int32)
    valid = (group_ids >= 0) & (group_ids < num_groups)  # [R]
    ids = jnp.where(valid, group_ids, 0)  # [R] safe gather index
    r = jnp.where(valid, rewards, 0.0)  # [R]
    w = valid.astype(jnp.float32)  # [R]

    size = jax.ops.segment_sum(w, ids, num_segments=num_groups)  # [num_groups] members per group
    mean = jax.ops.segment_sum(r, ids, num_segments=num_groups) / jnp.maximum(size, 1.0)
    dev = (r - mean[ids]) * w  # [R] r - mean_g
    n = size[ids]  # [R] size of the row's group

    if estimator == "drgrpo":
        adv = dev
    elif estimator == "rloo":
        adv = dev * jnp.where(n > 1, n / jnp.maximum(n - 1.0, 1.0), 0.0)
    else:  # grpo
        # Centred two-pass variance: exact zero for a constant group, so its advantage is 0 / eps = 0.
        sq = jax.ops.segment_sum(dev * dev, ids, num_segments=num_groups)  # [num_groups]
        std = jnp.sqrt(sq / jnp.maximum(size - 1.0, 1.0))  # unbiased; a singleton has dev = 0 anyway
        adv = dev / (std[ids] + eps)
    return jnp.where(valid, adv, 0.0)


def token_advantages(advantages: jax.Array, loss_mask: jax.Array) -> jax.Array:
    """[R] advantages broadcast over the tokens of each row, times the [R, T] loss mask -> [R, T] f32."""
    advantages = jnp.asarray(advantages, jnp.float32)
    return advantages[:, None] * jnp.asarray(loss_mask, jnp.float32)
