"""Rewards: pure functions of a trajectory's text (and ids) returning floats, one per component,
combined per stage by weights and the authors' rules (`combine`), the LLM judge (HTTP or local),
the reasoning-graph score, and `score`, which assembles every component of a batch of
trajectories. The format grammars themselves live in `medr3_jax.protocol`."""

from medr3_jax.rewards.answer import BOTTOM_REWARD, Grade, grade_reward, rule_grade
from medr3_jax.rewards.combine import RewardRules, RewardWeights, combine
from medr3_jax.rewards.evidence import evidence_recall
from medr3_jax.rewards.graph import GraphReward, graph_score
from medr3_jax.rewards.judge import (
    HTTPJudge,
    Judge,
    JudgeStats,
    LocalJudge,
    Verdict,
    answer_prompt,
    extract_graphs,
    graph_prompt,
    judge_answers,
    parse_graph,
    parse_verdict,
)
from medr3_jax.rewards.penalties import (
    bad_search_penalty,
    format_penalty,
    has_chinese,
    language_penalties,
    language_penalty,
    overlong_penalty,
    think_length_penalty,
)
from medr3_jax.rewards.scoring import COMPONENTS, Outcome, OverlongConfig, Scored, score_outcomes

__all__ = [
    "BOTTOM_REWARD",
    "COMPONENTS",
    "GraphReward",
    "HTTPJudge",
    "Judge",
    "JudgeStats",
    "LocalJudge",
    "Outcome",
    "OverlongConfig",
    "RewardRules",
    "Scored",
    "Verdict",
    "answer_prompt",
    "extract_graphs",
    "graph_prompt",
    "parse_graph",
    "graph_score",
    "judge_answers",
    "parse_verdict",
    "score_outcomes",
    "Grade",
    "RewardWeights",
    "bad_search_penalty",
    "combine",
    "evidence_recall",
    "format_penalty",
    "grade_reward",
    "has_chinese",
    "language_penalties",
    "language_penalty",
    "overlong_penalty",
    "rule_grade",
    "think_length_penalty",
]
