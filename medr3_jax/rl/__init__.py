"""RL math as pure functions: group-relative advantages (GRPO, Dr. GRPO, RLOO) and the clipped
policy-gradient loss with its config; no state, no model, nothing imported from above."""

from medr3_jax.rl.advantages import ESTIMATORS, group_advantages, token_advantages
from medr3_jax.rl.losses import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    PolicyLossConfig,
    aggregate,
    chunked_token_logprobs_and_entropy,
    policy_loss,
    token_logprobs_and_entropy,
)

__all__ = [
    "AGGREGATIONS",
    "ESTIMATORS",
    "KL_ESTIMATORS",
    "PolicyLossConfig",
    "aggregate",
    "chunked_token_logprobs_and_entropy",
    "group_advantages",
    "policy_loss",
    "token_advantages",
    "token_logprobs_and_entropy",
]
