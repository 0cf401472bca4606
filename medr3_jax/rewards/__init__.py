"""Rewards: pure functions of a trajectory's text (and ids) returning floats, one per component,
their weighted sum per stage (`combine`), the LLM judge (HTTP or local), the reasoning-graph
score, and `score`, which assembles every component of a batch of trajectories."""

from medr3_jax.rewards.answer import GRADE_REWARD, Grade, answer_reward, rule_grade
from medr3_jax.rewards.combine import RewardWeights, combine
from medr3_jax.rewards.evidence import evidence_recall
from medr3_jax.rewards.format import search_format, strict_format, think_and_answer
from medr3_jax.rewards.graph import GraphReward, ReferenceGraph, graph_score
from medr3_jax.rewards.judge import HTTPJudge, Judge, JudgeStats, LocalJudge, extract_triples, judge_grades
from medr3_jax.rewards.penalties import (
    bad_search_penalty,
    format_penalty,
    is_cjk,
    language_penalties,
    language_penalty,
    overlong_penalty,
    think_length_penalty,
)
from medr3_jax.rewards.scoring import Outcome, OverlongConfig, Scored, score

__all__ = [
    "GraphReward",
    "HTTPJudge",
    "Judge",
    "JudgeStats",
    "LocalJudge",
    "Outcome",
    "OverlongConfig",
    "ReferenceGraph",
    "Scored",
    "extract_triples",
    "graph_score",
    "judge_grades",
    "score",
    "GRADE_REWARD",
    "Grade",
    "RewardWeights",
    "answer_reward",
    "bad_search_penalty",
    "combine",
    "evidence_recall",
    "format_penalty",
    "is_cjk",
    "language_penalties",
    "language_penalty",
    "overlong_penalty",
    "rule_grade",
    "search_format",
    "strict_format",
    "think_and_answer",
    "think_length_penalty",
]
