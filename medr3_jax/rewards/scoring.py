"""Every reward component of a batch of finished trajectories, and their weighted total.

    outcomes = [Outcome(text="<think>...</think><answer>B</answer>", response_tokens=37,
                        bad_search=False, retrieved_ids=("Cardiology_3",))]
    scored = score(outcomes, records, RewardWeights.stage2(), retrieval=True)
    scored.totals           # [R] f32, the scalar reward of each row
    scored.components       # name -> [R] f32 (NaN where a component had no value, e.g. no gold)
    scored.metrics          # "reward/<name>" means over rows with a value, judge fallbacks, ...

Only components with a non-zero weight are computed (the judge is slow). The judge grades the
answer when one is given; a failed judge call falls back to the rule grade (counted).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

from medr3_jax.data.answers import tagged_answer
from medr3_jax.data.records import QARecord
from medr3_jax.rewards.answer import answer_reward
from medr3_jax.rewards.combine import RewardWeights, combine
from medr3_jax.rewards.evidence import evidence_recall
from medr3_jax.rewards.format import search_format, strict_format, think_and_answer
from medr3_jax.rewards.graph import GraphReward, ReferenceGraph
from medr3_jax.rewards.judge import Judge, judge_grades
from medr3_jax.rewards.penalties import (
    bad_search_penalty,
    format_penalty,
    language_penalties,
    overlong_penalty,
    think_length_penalty,
)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What the rewards read of one trajectory.

    text: the assistant side from the prompt's closing `<think>` on (`"<think>" + response`),
      inserted documents included, end-of-turn tokens removed.
    response_tokens: sampled + inserted tokens (the overlong penalty's length).
    bad_search: the row wrote `<document>` itself or an empty / double `<search>`.
    retrieved_ids: every passage id its searches returned.
    """

    text: str
    response_tokens: int
    bad_search: bool = False
    retrieved_ids: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Scored:
    totals: np.ndarray
    components: dict[str, np.ndarray]
    metrics: dict[str, float]


@dataclasses.dataclass(frozen=True, kw_only=True)
class OverlongConfig:
    """DAPO's soft overlong punishment: no penalty up to max_length - buffer tokens."""

    max_length: int = 14336
    buffer: int = 3072


def score(
    outcomes: Sequence[Outcome],
    records: Sequence[QARecord],
    weights: RewardWeights,
    *,
    retrieval: bool,
    judge: Judge | None = None,
    graph: GraphReward | None = None,
    references: Mapping[str, Sequence[ReferenceGraph]] | None = None,
    overlong: OverlongConfig = OverlongConfig(),
) -> Scored:
    """Components per row (see the module docstring); `references` maps record id -> graphs."""
    if len(outcomes) != len(records):
        raise ValueError(f"score: {len(outcomes)} outcomes but {len(records)} records")
    w = dataclasses.asdict(weights)
    used = {name for name, value in w.items() if value}
    parts = [think_and_answer(o.text) for o in outcomes]
    comps: dict[str, list[float | None]] = {}
    metrics: dict[str, float] = {}

    fmt = [search_format(o.text) if retrieval else strict_format(o.text) for o in outcomes]
    if "strict_format" in used:
        comps["strict_format"] = [strict_format(o.text) for o in outcomes]
    if "search_format" in used:
        comps["search_format"] = [search_format(o.text) for o in outcomes]
    if "format_penalty" in used:
        comps["format_penalty"] = [format_penalty(f) for f in fmt]
    if "answer" in used:
        comps["answer"], metrics = _answers(outcomes, records, judge)
    if "graph" in used:
        refs = [list((references or {}).get(r.id, ())) for r in records]
        scores = graph([think for think, _ in parts], refs) if graph is not None else None
        comps["graph"] = scores if scores is not None else [None] * len(outcomes)
    if "evidence" in used:
        comps["evidence"] = [evidence_recall(o.retrieved_ids, r.evidence_ids) for o, r in zip(outcomes, records)]
    if "think_length" in used:
        comps["think_length"] = [think_length_penalty(think, answer) for think, answer in parts]
    if "language" in used:
        comps["language"] = [language_penalties(r.question, t, a) for r, (t, a) in zip(records, parts)]
    if "overlong" in used:
        comps["overlong"] = [
            overlong_penalty(o.response_tokens, overlong.max_length, overlong.buffer) for o in outcomes
        ]
    if "bad_search" in used:
        comps["bad_search"] = [bad_search_penalty(o.bad_search) for o in outcomes]

    totals = np.array([combine({k: v[i] for k, v in comps.items()}, weights) for i in range(len(outcomes))], np.float32)
    arrays = {k: np.array([math.nan if x is None else x for x in v], np.float32) for k, v in comps.items()}
    for name, values in arrays.items():
        have = ~np.isnan(values)
        metrics[f"reward/{name}"] = float(values[have].mean()) if have.any() else math.nan
        metrics[f"reward/{name}_missing"] = float((~have).sum())
    metrics["reward/total"] = float(totals.mean()) if len(totals) else math.nan
    metrics["reward/format_ok"] = float(np.mean(fmt)) if fmt else math.nan
    return Scored(totals, arrays, metrics)


def _answers(
    outcomes: Sequence[Outcome], records: Sequence[QARecord], judge: Judge | None
) -> tuple[list[float], dict[str, float]]:
    """Answer rewards (judge first when there is one, rules as its fallback) and counts."""
    answers = [tagged_answer(o.text) for o in outcomes]
    grades: list[int | None] = [None] * len(outcomes)
    asked = [i for i, a in enumerate(answers) if a is not None]
    if judge is not None and asked:
        for i, grade in zip(asked, judge_grades(judge, [(records[i], answers[i]) for i in asked])):
            grades[i] = grade
    rewards, sources = [], []
    for o, r, g in zip(outcomes, records, grades):
        value, source = answer_reward(o.text, r, g)
        rewards.append(value)
        sources.append(source)
    counts = {
        "reward/answer_by_judge": float(sources.count("judge")),
        "reward/answer_by_rules": float(sources.count("rules")),
        "reward/no_answer": float(sources.count("no_answer")),
    }
    if judge is not None:
        counts["reward/judge_fallbacks"] = float(len(asked) - sources.count("judge"))
    return rewards, counts
