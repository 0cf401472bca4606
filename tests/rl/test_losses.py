"""The clipped policy loss against hand-worked numbers and a plain numpy loop."""

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medr3_jax.rl import PolicyLossConfig, policy_loss, token_logprobs_and_entropy


def _logs(ratios):
    """log-probs whose ratio to old_logp = 0 is `ratios`."""
    return jnp.log(jnp.array(ratios, jnp.float32))


# Row 0, A = +1: ratios 1.5, 1.0, 0.7 (+ one padding token).
# Row 1, A = -2: ratios 0.5, 5.0, 1.1 (+ one padding token with a huge ratio that must not count).
RATIOS = [[1.5, 1.0, 0.7, 1.0], [0.5, 5.0, 1.1, 9.0]]
ADV = jnp.array([1.0, -2.0])
MASK = jnp.array([[1, 1, 1, 0], [1, 1, 1, 0]], bool)
OLD = jnp.zeros((2, 4))


def test_clipping_by_hand():
    # Row 0 (A = 1): 1.5 -> max(-1.5, -1.2) = -1.2 (clipped at 1 + 0.2); 1.0 -> -1; 0.7 -> max(-0.7, -0.8) = -0.7.
    # Row 1 (A = -2): 0.5 -> max(1.0, 2 * 0.8 = 1.6) = 1.6 (clipped at 1 - 0.2);
    #   5.0 -> max(10, 2.4) = 10, dual clip min(10, 3 * 2 = 6) = 6; 1.1 -> 2.2.
    # Token mean = (-1.2 - 1 - 0.7 + 1.6 + 6 + 2.2) / 6 = 6.9 / 6 = 1.15.
    loss, m = policy_loss(_logs(RATIOS), OLD, ADV, MASK, PolicyLossConfig())
    assert loss.dtype == jnp.float32 and loss.shape == ()
    np.testing.assert_allclose(loss, 1.15, rtol=1e-6)
    np.testing.assert_allclose(m["loss/policy"], 1.15, rtol=1e-6)
    np.testing.assert_allclose(m["loss/clip_fraction"], 2 / 6, rtol=1e-6)  # the 1.5 and the 0.5
    np.testing.assert_allclose(m["loss/dual_clip_fraction"], 1 / 6, rtol=1e-6)  # the 5.0
    np.testing.assert_allclose(m["loss/ratio_mean"], (1.5 + 1 + 0.7 + 0.5 + 5 + 1.1) / 6, rtol=1e-6)
    logs = np.log([1.5, 1.0, 0.7, 0.5, 5.0, 1.1])
    np.testing.assert_allclose(m["loss/approx_kl"], np.mean(0.5 * logs**2), rtol=1e-6)
    assert set(m) == {
        "loss/policy",
        "loss/clip_fraction",
        "loss/dual_clip_fraction",
        "loss/approx_kl",
        "loss/ratio_mean",
    }
    assert all(v.dtype == jnp.float32 and v.shape == () for v in m.values())

    # Without dual clip the 5.0 token costs 10: (6.9 - 6 + 10) / 6 = 10.9 / 6.
    loss, m = policy_loss(_logs(RATIOS), OLD, ADV, MASK, PolicyLossConfig(dual_clip=None))
    np.testing.assert_allclose(loss, 10.9 / 6, rtol=1e-6)
    assert m["loss/dual_clip_fraction"] == 0


def test_asymmetric_clip_higher():
    # A = +1: ratio 1.25 -> clipped at 1.2 with ε_high = 0.2 (-1.2) but not with 0.28 (-1.25);
    # ratio 1.5 -> -1.28 with 0.28. A = -1: ratio 0.5 -> max(0.5, 0.8) = 0.8 either way (ε_low = 0.2).
    logp = _logs([[1.25, 1.5, 0.5]])
    adv = jnp.array([[1.0, 1.0, -1.0]])  # per-token advantages
    mask = jnp.ones((1, 3))
    cfg = PolicyLossConfig(aggregation="seq-mean-token-sum")
    loss, m = policy_loss(logp, jnp.zeros((1, 3)), adv, mask, cfg)
    np.testing.assert_allclose(loss, -1.2 - 1.2 + 0.8, rtol=1e-6)
    np.testing.assert_allclose(m["loss/clip_fraction"], 1.0)
    loss, m = policy_loss(
        logp, jnp.zeros((1, 3)), adv, mask, PolicyLossConfig(clip_high=0.28, aggregation=cfg.aggregation)
    )
    np.testing.assert_allclose(loss, -1.25 - 1.28 + 0.8, rtol=1e-6)
    np.testing.assert_allclose(m["loss/clip_fraction"], 2 / 3, rtol=1e-6)


@pytest.mark.parametrize(
    "aggregation, expected",
    [
        # Ratio 1 everywhere, so pg = -A: row 0 three tokens of -1.1, -1, -0.9 (A = 1, 1.1, 0.9 per token),
        # row 1 one token of +2 (A = -2), row 2 no tokens.
        ("token-mean", (-3.0 + 2.0) / 4),  # all 4 tokens: -0.25
        ("seq-mean-token-mean", (-1.0 + 2.0) / 2),  # rows 0, 1 only: 0.5
        ("seq-mean-token-sum", (-3.0 + 2.0 + 0.0) / 3),  # all 3 rows: -1/3
    ],
)
def test_aggregations_on_uneven_masks(aggregation, expected):
    adv = jnp.array([[1.1, 1.0, 0.9, 7.0], [-2.0, 5.0, 5.0, 5.0], [4.0, 4.0, 4.0, 4.0]])
    mask = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], jnp.float32)
    loss, _ = policy_loss(jnp.zeros((3, 4)), jnp.zeros((3, 4)), adv, mask, PolicyLossConfig(aggregation=aggregation))
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_all_masked_is_zero_not_nan():
    for aggregation in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
        loss, m = policy_loss(
            jnp.zeros((2, 3)), jnp.zeros((2, 3)), ADV, jnp.zeros((2, 3)), PolicyLossConfig(aggregation=aggregation)
        )
        assert loss == 0 and all(np.isfinite(v) for v in m.values())


@pytest.mark.parametrize("estimator, per_token", [("k1", [0.5, -1.0]), ("k3", [math.exp(-0.5) - 0.5, math.e - 2])])
def test_kl_by_hand(estimator, per_token):
    # logp = [-1, -2], ref = [-1.5, -1]: k1 = logp - ref = [0.5, -1];
    # k3 with d = ref - logp = [-0.5, 1]: e^d - d - 1 = [e^-0.5 + 0.5 - 1, e - 1 - 1] = [0.106531, 0.718282].
    # A = 0 so the policy term is 0 and loss = β · mean(kl).
    logp = jnp.array([[-1.0, -2.0]])
    ref = jnp.array([[-1.5, -1.0]])
    cfg = PolicyLossConfig(kl_coef=0.1, kl_estimator=estimator)
    loss, m = policy_loss(logp, logp, jnp.zeros(1), jnp.ones((1, 2)), cfg, ref_logp=ref)
    np.testing.assert_allclose(m["loss/kl"], np.mean(per_token), rtol=1e-6)
    np.testing.assert_allclose(loss, 0.1 * np.mean(per_token), rtol=1e-6)
    # With β = 0 the KL is only logged.
    cfg = PolicyLossConfig(kl_estimator=estimator)
    loss, m = policy_loss(logp, logp, jnp.zeros(1), jnp.ones((1, 2)), cfg, ref_logp=ref)
    assert loss == 0 and np.isclose(m["loss/kl"], np.mean(per_token))


def test_entropy_bonus_by_hand():
    # Row 0 of the clipping example with only its first two tokens: pg = -1.2, -1 -> token mean -1.1.
    # Token-mean entropy of those tokens = (1 + 2) / 2 = 1.5; loss = -1.1 - 0.01 * 1.5 = -1.115.
    entropy = jnp.array([[1.0, 2.0, 3.0, 99.0]])
    mask = jnp.array([[1, 1, 0, 0]])
    cfg = PolicyLossConfig(entropy_coef=0.01)
    loss, m = policy_loss(_logs(RATIOS[:1]), OLD[:1], ADV[:1], mask, cfg, entropy=entropy)
    np.testing.assert_allclose(m["loss/entropy"], 1.5, rtol=1e-6)
    np.testing.assert_allclose(loss, -1.1 - 0.01 * 1.5, rtol=1e-6)


def test_gradients_finite_and_zero_off_mask():
    # Garbage at the masked positions (inf old log-prob, huge logp) must not leak into value or gradient.
    logp = _logs(RATIOS).at[:, 3].set(80.0)
    old = OLD.at[0, 3].set(-jnp.inf).at[1, 3].set(jnp.nan)
    ref = jnp.zeros((2, 4)).at[:, 3].set(jnp.inf)
    cfg = PolicyLossConfig(kl_coef=0.1, kl_estimator="k3")

    def f(lp):
        return policy_loss(lp, old, ADV, MASK, cfg, ref_logp=ref)[0]

    assert np.isfinite(f(logp))
    kl_grad = jax.grad(f)(logp)
    assert np.isfinite(np.asarray(kl_grad)).all()
    np.testing.assert_array_equal(kl_grad[:, 3], 0.0)
    grad = jax.grad(lambda lp: policy_loss(lp, old, ADV, MASK, PolicyLossConfig())[0])(logp)
    # d/dlogp of -A·ratio / 6 = -A·ratio / 6 where the unclipped branch is used; 0 where clipped.
    expected = np.array([[0.0, -1.0 / 6, -0.7 / 6, 0.0], [0.0, 0.0, 2 * 1.1 / 6, 0.0]])
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)


def test_jit_with_static_config():
    cfg = PolicyLossConfig(clip_high=0.28, kl_coef=0.05, kl_estimator="k3", aggregation="seq-mean-token-mean")
    jitted = jax.jit(policy_loss, static_argnames="config")
    args = (_logs(RATIOS), OLD, ADV, MASK)
    ref = jnp.full((2, 4), -0.3)
    loss, metrics = jitted(*args, config=cfg, ref_logp=ref)
    eager, _ = policy_loss(*args, cfg, ref_logp=ref)
    np.testing.assert_allclose(loss, eager, rtol=1e-6)
    assert set(metrics) >= {"loss/policy", "loss/kl"}
    assert hash(cfg) == hash(PolicyLossConfig(**dataclasses.asdict(cfg)))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"clip_low": -0.1}, "clip_low"),
        ({"clip_low": 1.0}, "clip_low"),
        ({"clip_high": -0.01}, "clip_high"),
        ({"clip_high": float("nan")}, "clip_high"),
        ({"dual_clip": 1.0}, "dual_clip"),
        ({"dual_clip": 0.5}, "dual_clip"),
        ({"aggregation": "mean"}, "aggregation"),
        ({"kl_coef": -1.0}, "kl_coef"),
        ({"kl_coef": True}, "kl_coef"),
        ({"kl_estimator": "k2"}, "kl_estimator"),
        ({"entropy_coef": -0.1}, "entropy_coef"),
    ],
)
def test_invalid_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PolicyLossConfig(**kwargs)


def test_missing_inputs_raise():
    args = (_logs(RATIOS), OLD, ADV, MASK)
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(*args, PolicyLossConfig(kl_coef=0.1))
    with pytest.raises(ValueError, match="entropy"):
        policy_loss(*args, PolicyLossConfig(entropy_coef=0.1))
    with pytest.raises(ValueError, match="old_logp"):
        policy_loss(args[0], OLD[:, :3], ADV, MASK, PolicyLossConfig())
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(args[0], OLD, jnp.zeros(3), MASK, PolicyLossConfig())


def _numpy_loss(logp, old, adv, mask, ref, ent, cfg):
    """The loss written token by token in float64, straight from the definitions."""
    R, T = logp.shape
    pg = np.zeros((R, T))
    kl = np.zeros((R, T))
    for r in range(R):
        for t in range(T):
            a = adv[r]
            ratio = math.exp(logp[r, t] - old[r, t])
            clipped = min(max(ratio, 1 - cfg.clip_low), 1 + cfg.clip_high)
            v = max(-a * ratio, -a * clipped)
            if cfg.dual_clip is not None and a < 0:
                v = min(v, -a * cfg.dual_clip)
            pg[r, t] = v
            d = ref[r, t] - logp[r, t]
            kl[r, t] = -d if cfg.kl_estimator == "k1" else math.exp(d) - d - 1

    def agg(x):
        if cfg.aggregation == "token-mean":
            return (x * mask).sum() / max(mask.sum(), 1)
        if cfg.aggregation == "seq-mean-token-sum":
            return (x * mask).sum(1).mean()
        rows = [(x[r] * mask[r]).sum() / mask[r].sum() for r in range(R) if mask[r].sum() > 0]
        return sum(rows) / max(len(rows), 1)

    ent_mean = (ent * mask).sum() / max(mask.sum(), 1)
    return agg(pg) + cfg.kl_coef * agg(kl) - cfg.entropy_coef * ent_mean


def test_matches_numpy_loop_for_every_option():
    rng = np.random.default_rng(0)
    R, T = 5, 7
    old = -rng.uniform(0.1, 3.0, size=(R, T))
    logp = old + rng.normal(scale=0.4, size=(R, T))
    ref = old + rng.normal(scale=0.3, size=(R, T))
    ent = rng.uniform(0.0, 2.0, size=(R, T))
    adv = rng.normal(scale=1.5, size=R)
    mask = (rng.uniform(size=(R, T)) < 0.7).astype(np.float64)
    mask[2] = 0.0  # an empty row
    mask[3, :] = 0.0
    mask[3, 0] = 1.0  # a one-token row
    inputs = [jnp.asarray(x, jnp.float32) for x in (logp, old, adv, mask, ref, ent)]
    f64 = [np.asarray(x, np.float64) for x in inputs]  # the reference sees the same f32-rounded values
    options = itertools.product(
        ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"],
        ["k1", "k3"],
        [None, 3.0, 1.5],
        [0.2, 0.28],
        [0.0, 0.1],
        [0.0, 0.01],
    )
    for aggregation, estimator, dual, high, beta, ent_coef in options:
        cfg = PolicyLossConfig(
            clip_high=high,
            dual_clip=dual,
            aggregation=aggregation,
            kl_coef=beta,
            kl_estimator=estimator,
            entropy_coef=ent_coef,
        )
        loss, _ = policy_loss(*inputs[:4], cfg, ref_logp=inputs[4], entropy=inputs[5])
        expected = _numpy_loss(*f64, cfg)
        np.testing.assert_allclose(loss, expected, rtol=2e-5, atol=1e-6, err_msg=str(cfg))


def test_token_logprobs_and_entropy_by_hand():
    # Row 0: uniform over V = 4 -> logp = -ln 4, entropy = ln 4.
    # Row 1: logits [0, ln 3, -inf, -inf] -> p = [0.25, 0.75, 0, 0]; token 1: ln 0.75;
    #   entropy = -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.562335 (the -inf entries add 0, not NaN).
    logits = jnp.array([[[0.0, 0.0, 0.0, 0.0]], [[0.0, math.log(3), -jnp.inf, -jnp.inf]]])
    tokens = jnp.array([[2], [1]])
    logp, entropy = token_logprobs_and_entropy(logits, tokens)
    assert logp.dtype == entropy.dtype == jnp.float32 and logp.shape == entropy.shape == (2, 1)
    np.testing.assert_allclose(logp, [[-math.log(4)], [math.log(0.75)]], rtol=1e-6)
    np.testing.assert_allclose(entropy, [[math.log(4)], [0.562335]], rtol=1e-5)
    grad = jax.grad(lambda x: token_logprobs_and_entropy(x, tokens)[1].sum())(logits)
    assert np.isfinite(np.asarray(grad)).all()


def test_token_logprobs_match_a_loop_on_random_logits():
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=3.0, size=(2, 3, 11)).astype(np.float32)
    tokens = rng.integers(0, 11, size=(2, 3))
    logp, entropy = token_logprobs_and_entropy(jnp.asarray(logits), jnp.asarray(tokens))
    for r, t in itertools.product(range(2), range(3)):
        x = logits[r, t].astype(np.float64)
        lp = x - x.max() - np.log(np.exp(x - x.max()).sum())
        np.testing.assert_allclose(logp[r, t], lp[tokens[r, t]], rtol=1e-5)
        np.testing.assert_allclose(entropy[r, t], -(np.exp(lp) * lp).sum(), rtol=1e-5)
