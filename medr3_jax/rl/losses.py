"""The clipped policy-gradient loss (PPO / GRPO / DAPO clip-higher, dual clip), optional KL to a
reference policy and entropy bonus, and the per-token log-probs it consumes.

    config = PolicyLossConfig(clip_high=0.28)             # DAPO clip-higher
    logp, entropy = token_logprobs_and_entropy(logits, tokens)
    loss, metrics = policy_loss(logp, old_logp, advantages, loss_mask, config, entropy=entropy)

R rows, T tokens, V vocabulary. Pure jax.numpy, f32 math; `config` is hashable, so it can be a
static argument of `jax.jit`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from medr3_jax.config_types import check_field_types

AGGREGATIONS: tuple[str, ...] = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
KL_ESTIMATORS: tuple[str, ...] = ("k1", "k3")

# exp() of a log-ratio beyond this would overflow the gradient; the clipped objective is flat there.
_MAX_LOG_RATIO = 20.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class PolicyLossConfig:
    """How `policy_loss` clips, aggregates and regularises. The defaults are Med-R3's: PPO clip 0.2
    both ways, dual clip 3.0, token-mean, no KL, no entropy bonus."""

    clip_low: float = 0.2
    """ε_low: the ratio is clipped below at 1 - ε_low; in [0, 1)."""
    clip_high: float = 0.2
    """ε_high: the ratio is clipped above at 1 + ε_high; >= 0 (0.28 for DAPO clip-higher)."""
    dual_clip: float | None = 3.0
    """c: for A < 0 the per-token loss is capped at -A·c (dual-clip PPO); > 1, None disables."""
    aggregation: str = "token-mean"
    """How per-token losses become a scalar: "token-mean" (Σ over all tokens / number of tokens),
    "seq-mean-token-mean" (mean over non-empty rows of each row's token mean), or
    "seq-mean-token-sum" (mean over all R rows of each row's token sum)."""
    kl_coef: float = 0.0
    """β: weight of the KL(π_θ || π_ref) penalty; 0 disables it (Med-R3's default)."""
    kl_estimator: str = "k1"
    """Per-token KL estimate: "k1" = log π_θ - log π_ref; "k3" = e^(ref - logp) - (ref - logp) - 1."""
    entropy_coef: float = 0.0
    """Weight of the token-mean entropy bonus (subtracted from the loss); 0 disables it."""

    def __post_init__(self) -> None:
        check_field_types(self)
        _check_number("clip_low", self.clip_low, lambda v: 0 <= v < 1, "in [0, 1)")
        _check_number("clip_high", self.clip_high, lambda v: v >= 0, ">= 0")
        if self.dual_clip is not None:
            _check_number("dual_clip", self.dual_clip, lambda v: v > 1, "> 1 (or None to disable)")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {list(AGGREGATIONS)}, got {self.aggregation!r}")
        _check_number("kl_coef", self.kl_coef, lambda v: v >= 0, ">= 0")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {list(KL_ESTIMATORS)}, got {self.kl_estimator!r}")
        _check_number("entropy_coef", self.entropy_coef, lambda v: v >= 0, ">= 0")


def _check_number(name: str, value: object, ok, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
        raise ValueError(f"{name} must be a finite number {what}, got {value!r}")


def aggregate(values: jax.Array, mask: jax.Array, aggregation: str) -> jax.Array:
    """[R, T] per-token values, [R, T] f32 mask -> scalar f32, by one of `AGGREGATIONS`."""
    masked = jnp.where(mask > 0, values * mask, 0.0)  # where, not *: a masked inf/NaN stays out
    if aggregation == "token-mean":
        return masked.sum() / jnp.maximum(mask.sum(), 1.0)
    row_sum = masked.sum(axis=1)  # [R]
    if aggregation == "seq-mean-token-sum":
        return row_sum.mean()
    if aggregation == "seq-mean-token-mean":
        row_len = mask.sum(axis=1)  # [R]
        has_tokens = (row_len > 0).astype(jnp.float32)  # [R]
        row_mean = row_sum / jnp.maximum(row_len, 1.0)
        return (row_mean * has_tokens).sum() / jnp.maximum(has_tokens.sum(), 1.0)
    raise ValueError(f"aggregation must be one of {list(AGGREGATIONS)}, got {aggregation!r}")


def policy_loss(
    logp: jax.Array,
    old_logp: jax.Array,
    advantages: jax.Array,
    loss_mask: jax.Array,
    config: PolicyLossConfig,
    *,
    ref_logp: jax.Array | None = None,
    entropy: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Clipped policy-gradient loss, to be minimised.

    Per token: ratio = exp(logp - old_logp); pg = max(-A·ratio, -A·clip(ratio, 1-ε_low, 1+ε_high));
    for A < 0 with dual clip c: pg = min(pg, -A·c). loss = agg(pg) + β·agg(kl) - entropy_coef·token_mean(H).

    Args:
      logp: [R, T] log π_θ of each sampled token (differentiated).
      old_logp: [R, T] log π_old from the rollout.
      advantages: [R] per-row advantage A (or [R, T] per-token).
      loss_mask: [R, T] bool/float; 0 on prompt, retrieved documents and padding.
      config: clipping, aggregation, KL and entropy settings.
      ref_logp: [R, T] log π_ref; required when config.kl_coef > 0, logged as "loss/kl" when given.
      entropy: [R, T] per-token entropy H; required when config.entropy_coef > 0.

    Returns: (scalar f32 loss, {"loss/policy", "loss/clip_fraction", "loss/dual_clip_fraction",
      "loss/approx_kl", "loss/ratio_mean", and "loss/kl" / "loss/entropy" when given}), all f32
      scalars. Values at masked positions never reach the loss or its gradient, even if inf/NaN.
    """
    if config.kl_coef > 0 and ref_logp is None:
        raise ValueError(f"kl_coef={config.kl_coef} > 0 needs ref_logp")
    if config.entropy_coef > 0 and entropy is None:
        raise ValueError(f"entropy_coef={config.entropy_coef} > 0 needs entropy")
    shape = jnp.shape(logp)
    named = {"old_logp": old_logp, "loss_mask": loss_mask, "ref_logp": ref_logp, "entropy": entropy}
    for name, array in named.items():
        if array is not None and jnp.shape(array) != shape:
            raise ValueError(f"{name} has shape {jnp.shape(array)}, expected logp's {shape}")
    if jnp.shape(advantages) not in (shape[:1], shape):
        raise ValueError(f"advantages has shape {jnp.shape(advantages)}, expected {shape[:1]} or {shape}")

    f32 = jnp.float32
    mask = jnp.asarray(loss_mask).astype(f32)  # [R, T]
    on = mask > 0
    logp = jnp.asarray(logp, f32)
    adv = jnp.asarray(advantages, f32)
    adv = adv[:, None] if adv.ndim == 1 else adv  # [R, 1] or [R, T]

    def token_mean(x: jax.Array) -> jax.Array:
        return aggregate(x, mask, "token-mean")

    # Zero the log-ratio off the mask *before* exp, so garbage there has neither value nor gradient.
    log_ratio = jnp.where(on, logp - jnp.asarray(old_logp, f32), 0.0)  # [R, T]
    ratio = jnp.exp(jnp.clip(log_ratio, -_MAX_LOG_RATIO, _MAX_LOG_RATIO))
    pg_unclipped = -adv * ratio
    pg_clipped = -adv * jnp.clip(ratio, 1.0 - config.clip_low, 1.0 + config.clip_high)
    pg = jnp.maximum(pg_unclipped, pg_clipped)  # pessimistic of the two
    dual_used = jnp.zeros_like(on)
    if config.dual_clip is not None:
        cap = -adv * config.dual_clip
        dual_used = (adv < 0) & (pg > cap)
        pg = jnp.where(adv < 0, jnp.minimum(pg, cap), pg)
    policy = aggregate(pg, mask, config.aggregation)
    loss = policy

    metrics = {
        "loss/policy": policy,
        "loss/clip_fraction": token_mean((pg_clipped > pg_unclipped).astype(f32)),
        "loss/dual_clip_fraction": token_mean(dual_used.astype(f32)),
        "loss/approx_kl": token_mean(0.5 * jnp.square(log_ratio)),
        "loss/ratio_mean": token_mean(ratio),
    }
    if ref_logp is not None:
        ref_minus = jnp.where(on, jnp.asarray(ref_logp, f32) - logp, 0.0)  # [R, T] log π_ref - log π_θ
        if config.kl_estimator == "k1":
            kl_tok = -ref_minus
        else:  # k3: unbiased, non-negative, low variance
            kl_tok = jnp.exp(jnp.clip(ref_minus, -_MAX_LOG_RATIO, _MAX_LOG_RATIO)) - ref_minus - 1.0
        kl = aggregate(kl_tok, mask, config.aggregation)
        metrics["loss/kl"] = kl
        if config.kl_coef > 0:
            loss = loss + config.kl_coef * kl
    if entropy is not None:
        mean_entropy = token_mean(jnp.asarray(entropy, f32))
        metrics["loss/entropy"] = mean_entropy
        if config.entropy_coef > 0:
            loss = loss - config.entropy_coef * mean_entropy
    metrics = {k: jax.lax.stop_gradient(v).astype(f32) for k, v in metrics.items()}
    return loss.astype(f32), metrics


def token_logprobs_and_entropy(logits: jax.Array, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Log-prob of each token and the entropy of its distribution, in f32.

    Args:
      logits: [R, T, V]; logits[r, t] is the distribution that scored tokens[r, t] (already shifted).
      tokens: [R, T] int token ids.

    Returns: (logp [R, T] = log_softmax(logits)[tokens], entropy [R, T] = -Σ_V p log p), f32.
    """
    logp_all = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)  # [R, T, V]
    logp = jnp.take_along_axis(logp_all, jnp.asarray(tokens)[..., None], axis=-1)[..., 0]  # [R, T]
    probs = jnp.exp(logp_all)
    # A -inf logit (masked vocabulary) has p = 0 and contributes 0, not 0 * -inf = NaN.
    finite_logp = jnp.where(jnp.isfinite(logp_all), logp_all, 0.0)
    entropy = -jnp.einsum("RTV,RTV->RT", probs, finite_logp)
    return logp, entropy


def chunked_token_logprobs_and_entropy(
    head: Callable[[jax.Array], jax.Array], hidden: jax.Array, tokens: jax.Array, chunk: int
) -> tuple[jax.Array, jax.Array]:
    """`token_logprobs_and_entropy(head(hidden), tokens)`, `chunk` positions at a time.

    Each slice's logits are made, reduced to (logp, entropy) and dropped inside a scan whose body
    is rematerialised (`jax.checkpoint`), so neither the forward nor the backward holds the
    [R, T, V] f32 logits: the peak is one [R, chunk, V] slice. At Qwen2.5's 152k vocabulary and
    4 rows x 16k positions the whole tensor would be 40 GB; a 512-position slice is 1.2 GB.

    Args:
      head: hidden [R, C, D] -> f32 logits [R, C, V] (final norm, LM head, temperature).
      hidden: [R, T, D]; hidden[r, t] scores tokens[r, t] (already shifted).
      tokens: [R, T] int token ids.
      chunk: positions per slice; <= 0 or >= T computes all positions at once.
    """
    r, t = tokens.shape
    if chunk <= 0 or chunk >= t:
        return token_logprobs_and_entropy(head(hidden), tokens)
    n = -(-t // chunk)
    pad = n * chunk - t  # padded positions score token 0 and are cut off below
    xs = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(r, n, chunk, hidden.shape[-1]).swapaxes(0, 1)
    ids = jnp.pad(tokens, ((0, 0), (0, pad))).reshape(r, n, chunk).swapaxes(0, 1)

    @jax.checkpoint
    def piece(carry, slice_):
        return carry, token_logprobs_and_entropy(head(slice_[0]), slice_[1])

    _, (logp, entropy) = jax.lax.scan(piece, None, (xs, ids))  # [n, R, chunk] each
    unchunk = lambda a: a.swapaxes(0, 1).reshape(r, n * chunk)[:, :t]  # noqa: E731
    return unchunk(logp), unchunk(entropy)
