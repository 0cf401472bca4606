"""Group advantages against hand-worked numbers and loop references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medr3_jax.rl import group_advantages, token_advantages

# Group 0 = [1, 0, 1, 0.5] (rows 0, 2, 3, 5), group 1 = [2, 2] (rows 1, 4), interleaved.
REWARDS = jnp.array([1.0, 2.0, 0.0, 1.0, 2.0, 0.5])
IDS = jnp.array([0, 1, 0, 0, 1, 0])
# Group 0: mean = 2.5 / 4 = 0.625; deviations 0.375, -0.625, 0.375, -0.125.
# Group 1: mean = 2; deviations 0, 0.
DEV = np.array([0.375, 0.0, -0.625, 0.375, 0.0, -0.125])


def test_grpo_two_groups_by_hand():
    # Group 0: squares 0.140625 + 0.390625 + 0.140625 + 0.015625 = 0.6875; unbiased var = 0.6875 / 3.
    std0 = math.sqrt(0.6875 / 3)  # 0.478714
    # Group 1: std 0 -> 0 / (0 + 1e-6) = 0 exactly.
    expected = np.array([0.375, 0.0, -0.625, 0.375, 0.0, -0.125]) / np.array([std0 + 1e-6, 1, std0 + 1e-6] * 2)
    np.testing.assert_allclose(expected[[0, 2]], [0.783348, -1.305580], rtol=1e-5)
    adv = group_advantages(REWARDS, IDS, 2)
    assert adv.dtype == jnp.float32 and adv.shape == (6,)
    np.testing.assert_allclose(adv, expected, rtol=1e-5)
    assert adv[1] == 0.0 and adv[4] == 0.0


def test_drgrpo_by_hand():
    np.testing.assert_allclose(group_advantages(REWARDS, IDS, 2, estimator="drgrpo"), DEV, atol=1e-7)


def test_rloo_by_hand_and_by_loops():
    # r=1: others [0, 1, 0.5] mean 0.5 -> 0.5 (= 4/3 * 0.375); r=0: others mean 2.5/3 -> -0.8333;
    # r=0.5: others [1, 0, 1] mean 2/3 -> -0.1667; group 1: 2 - 2 = 0.
    expected = [0.5, 0.0, -2.5 / 3, 0.5, 0.0, 0.5 - 2 / 3]
    adv = group_advantages(REWARDS, IDS, 2, estimator="rloo")
    np.testing.assert_allclose(adv, expected, atol=1e-6)

    rng = np.random.default_rng(0)
    rewards = rng.normal(size=24).astype(np.float32)
    ids = rng.integers(0, 5, size=24)
    loops = np.zeros(24)
    for i in range(24):
        others = [rewards[j] for j in range(24) if ids[j] == ids[i] and j != i]
        loops[i] = rewards[i] - np.mean(others) if others else 0.0
    np.testing.assert_allclose(group_advantages(rewards, ids, 5, estimator="rloo"), loops, atol=1e-5)


def test_grpo_matches_numpy_ddof1_on_random_data():
    rng = np.random.default_rng(1)
    rewards = rng.normal(size=(8, 16)).astype(np.float32)  # 8 groups of G = 16
    expected = (rewards - rewards.mean(1, keepdims=True)) / (rewards.std(1, ddof=1, keepdims=True) + 1e-6)
    perm = rng.permutation(128)  # rows in any order
    ids = np.repeat(np.arange(8), 16)[perm]
    adv = group_advantages(rewards.reshape(-1)[perm], ids, 8)
    np.testing.assert_allclose(adv, expected.reshape(-1)[perm], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("estimator", ["grpo", "drgrpo", "rloo"])
def test_singleton_empty_and_padding_groups(estimator):
    # Group 0 = [1, 0]: mean 0.5, unbiased var (0.25 + 0.25) / 1 = 0.5 -> ±0.5 / sqrt(0.5) = ±0.7071;
    # rloo: 1 - 0 = 1, 0 - 1 = -1. Group 1 = [3] alone -> 0 for every estimator. Group 2 empty.
    # Row 3 has id -1 and row 4 id 7 (padding) -> 0, and they do not change group 0.
    rewards = jnp.array([1.0, 3.0, 0.0, 100.0, -50.0])
    ids = jnp.array([0, 1, 0, -1, 7])
    half = {"grpo": 0.5 / (math.sqrt(0.5) + 1e-6), "drgrpo": 0.5, "rloo": 1.0}[estimator]
    adv = group_advantages(rewards, ids, 3, estimator=estimator)
    np.testing.assert_allclose(adv, [half, 0.0, -half, 0.0, 0.0], rtol=1e-6)
    assert np.isfinite(np.asarray(adv)).all()


def test_unknown_estimator_names_it():
    with pytest.raises(ValueError, match="'ppo'"):
        group_advantages(REWARDS, IDS, 2, estimator="ppo")


def test_jits_inside_a_caller():
    @jax.jit
    def step(rewards, ids):
        return group_advantages(rewards, ids, 2, estimator="grpo").sum()

    assert abs(float(step(REWARDS, IDS))) < 1e-5  # advantages of a group sum to 0


def test_token_advantages():
    mask = jnp.array([[0, 1, 1], [1, 0, 0]], bool)
    out = token_advantages(jnp.array([2.0, -1.0]), mask)
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(out, [[0.0, 2.0, 2.0], [-1.0, 0.0, 0.0]])
