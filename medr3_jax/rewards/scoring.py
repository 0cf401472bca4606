"""Every reward component of a batch of finished trajectories, and their combined total.

    outcomes = [Outcome(text="<think>...</think><answer>Insulin</answer>", response_tokens=37,
                        bad_search=False, retrieved_ids=("Cardiology_3",))]
    scored = score_outcomes(outcomes, records, RewardWeights.stage3(), protocol=MED_R3, retrieval=True,
                   max_response_tokens=2048)
    scored.totals           # [R] f32, the scalar reward of each row
    scored.components       # name -> [R] f32 (NaN where a component had no value, e.g. no gold)
    scored.format_ok        # [R] bool, the protocol's format
    scored.answer_reasons   # why each answer got its value: the judge's reason, "rules", "FORMAT_WRONG", ...
    scored.metrics          # "reward/<name>" means over rows with a value, judge fallbacks, ...

Components are a table, `COMPONENTS` (name -> function of the batch); only those with a
non-zero weight are computed (the judge is slow). `combine` applies the weights and the
authors' rules (`RewardRules`: format gate, bad search replacing the reward, clamp).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Mapping, Sequence

import numpy as np

from medr3_jax.config_types import check_field_types
from medr3_jax.data.records import QARecord
from medr3_jax.data.references import Reference
from medr3_jax.protocol import MED_R3, Protocol
from medr3_jax.rewards.answer import BOTTOM_REWARD, grade_reward, rule_grade
from medr3_jax.rewards.combine import NAMES, RewardRules, RewardWeights, combine
from medr3_jax.rewards.evidence import evidence_recall
from medr3_jax.rewards.graph import GraphReward
from medr3_jax.rewards.judge import Judge, answer_prompt, judge_answers
from medr3_jax.rewards.penalties import (
    bad_search_penalty,
    format_penalty,
    language_penalties,
    overlong_buffer,
    overlong_penalty,
    think_length_penalty,
)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What the rewards read of one trajectory.

    text: the assistant text, `protocol.assistant_prefix(prompt) + response` ("<think>…"),
      inserted documents included, end-of-turn tokens removed.
    response_tokens: sampled + inserted tokens (the overlong penalty's length).
    bad_search: the rollout flagged it (`protocol.BAD_SEARCH_FLAGS`).
    retrieved_ids: every passage id its searches returned.
    question: the question as the policy saw it (the judge's and the language check's; the
      record's question when empty).
    """

    text: str
    response_tokens: int
    bad_search: bool = False
    retrieved_ids: tuple[str, ...] = ()
    question: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class OverlongConfig:
    """DAPO's soft overlong punishment: no penalty up to max_response_tokens - buffer tokens,
    then linearly down to -1 at max_response_tokens (`RolloutConfig.max_response_tokens`).
    buffer None: the authors' 3072 of 14336 tokens, scaled to the cap."""

    buffer: int | None = None

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.buffer is not None and self.buffer < 1:
            raise ValueError(f"OverlongConfig.buffer={self.buffer}: must be >= 1 (or None)")

    def buffer_for(self, max_length: int) -> int:
        buffer = overlong_buffer(max_length) if self.buffer is None else self.buffer
        if buffer > max_length:
            raise ValueError(f"OverlongConfig.buffer={buffer} exceeds the response cap of {max_length} tokens")
        return buffer


@dataclasses.dataclass(frozen=True)
class Scored:
    totals: np.ndarray
    components: dict[str, np.ndarray]
    format_ok: np.ndarray
    answer_reasons: list[str]
    metrics: dict[str, float]


@dataclasses.dataclass(frozen=True)
class _Answers:
    values: list[float | None]
    reasons: list[str]
    judged: list[bool]  # graded by the judge (the graph term needs it)
    metrics: dict[str, float]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Batch:
    """Everything a component may read; derived views are computed once, on first use."""

    outcomes: Sequence[Outcome]
    records: Sequence[QARecord]
    protocol: Protocol
    retrieval: bool
    rules: RewardRules
    letters_shown: bool
    judge: Judge | None
    graph: GraphReward | None
    references: Mapping[tuple[str, str], Sequence[Reference]]
    max_response_tokens: int
    overlong: OverlongConfig

    @functools.cached_property
    def fmt(self) -> list[float]:
        return [self.protocol.format_score(o.text, retrieval=self.retrieval) for o in self.outcomes]

    @functools.cached_property
    def parts(self) -> list[tuple[str, str]]:
        return [self.protocol.think_and_answer(o.text) for o in self.outcomes]

    @functools.cached_property
    def questions(self) -> list[str]:
        return [o.question or r.question for o, r in zip(self.outcomes, self.records)]

    @functools.cached_property
    def gated(self) -> list[bool]:
        return [self.rules.format_gate and f == 0.0 for f in self.fmt]

    @functools.cached_property
    def answers(self) -> _Answers:
        return _answers(self)


def _answers(b: Batch) -> _Answers:
    """The rubric's value per row: none for bad-search rows (not graded), 0.1 unjudged for gated
    rows, the judge's verdict where it gave one, the rules elsewhere (no judge, or the judge
    failed: counted), 0 without an answer."""
    values: list[float | None] = [0.0] * len(b.outcomes)
    reasons = ["no_answer"] * len(b.outcomes)
    judged = [False] * len(b.outcomes)
    graded = []
    for i, ((_, answer), gated) in enumerate(zip(b.parts, b.gated)):
        if b.outcomes[i].bad_search and b.rules.bad_search_replaces:
            values[i], reasons[i] = None, "BAD_SEARCH"  # its reward is the bad-search value: not graded
        elif gated:
            values[i], reasons[i] = BOTTOM_REWARD, "FORMAT_WRONG"
        elif answer:
            graded.append(i)
    verdicts = [None] * len(graded)
    if b.judge is not None and graded:
        prompts = [answer_prompt(b.records[i], b.parts[i][1], b.questions[i]) for i in graded]
        verdicts = judge_answers(b.judge, prompts)
    for i, verdict in zip(graded, verdicts):
        if verdict is not None:
            values[i], reasons[i], judged[i] = grade_reward(verdict.score), verdict.reason, True
        else:
            values[i] = grade_reward(rule_grade(b.parts[i][1], b.records[i], letters_shown=b.letters_shown))
            reasons[i] = "rules"
    metrics = {
        "reward/answer_by_judge": float(sum(judged)),
        "reward/answer_by_rules": float(reasons.count("rules")),
        "reward/no_answer": float(reasons.count("no_answer")),
        "reward/format_gated": float(reasons.count("FORMAT_WRONG")),
    }
    if b.judge is not None:
        metrics["reward/judge_fallbacks"] = float(len(graded) - sum(judged))
    return _Answers(values, reasons, judged, metrics)


def _graph(b: Batch) -> list[float | None]:
    """The reasoning-graph score where the format passed and the judge graded the answer
    (their order: no graph term for a gated row or a failed judge call); None elsewhere."""
    rows = [i for i, judged in enumerate(b.answers.judged) if judged]
    out: list[float | None] = [None] * len(b.outcomes)
    if b.graph is None or not rows:
        return out
    refs = [list(b.references.get((b.records[i].dataset, b.records[i].id), ())) for i in rows]
    scores = b.graph([b.parts[i][0] for i in rows], refs)
    for i, value in zip(rows, scores or [None] * len(rows)):
        out[i] = value
    return out


def _overlong(b: Batch) -> list[float | None]:
    buffer = b.overlong.buffer_for(b.max_response_tokens)
    return [overlong_penalty(o.response_tokens, b.max_response_tokens, buffer) for o in b.outcomes]


Component = Callable[[Batch], Sequence[float | None]]
COMPONENTS: dict[str, Component] = {
    "format": lambda b: b.fmt,
    "answer": lambda b: b.answers.values,
    "graph": _graph,
    "evidence": lambda b: [evidence_recall(o.retrieved_ids, r.evidence_ids) for o, r in zip(b.outcomes, b.records)],
    "format_penalty": lambda b: [format_penalty(f) for f in b.fmt],
    "think_length": lambda b: [think_length_penalty(think, answer) for think, answer in b.parts],
    "language": lambda b: [language_penalties(q, t, a) for q, (t, a) in zip(b.questions, b.parts)],
    "overlong": _overlong,
    "bad_search": lambda b: [bad_search_penalty(o.bad_search) for o in b.outcomes],
}
assert tuple(COMPONENTS) == NAMES, "every weight has exactly one component"


def score_outcomes(
    outcomes: Sequence[Outcome],
    records: Sequence[QARecord],
    weights: RewardWeights,
    *,
    protocol: Protocol = MED_R3,
    retrieval: bool,
    max_response_tokens: int,
    rules: RewardRules = RewardRules(),
    letters_shown: bool = False,
    judge: Judge | None = None,
    graph: GraphReward | None = None,
    references: Mapping[tuple[str, str], Sequence[Reference]] | None = None,
    overlong: OverlongConfig = OverlongConfig(),
) -> Scored:
    """Components and totals per row (see the module docstring). `references` maps (dataset,
    record id) -> its references (`data.references.read_references`); `letters_shown`: the
    prompt showed lettered options (the rules then read letters); `max_response_tokens`: the
    rollout's cap (the overlong term's maximum)."""
    if len(outcomes) != len(records):
        raise ValueError(f"score: {len(outcomes)} outcomes but {len(records)} records")
    batch = Batch(outcomes=outcomes, records=records, protocol=protocol, retrieval=retrieval, rules=rules,
                  letters_shown=letters_shown, judge=judge, graph=graph, references=references or {},
                  max_response_tokens=max_response_tokens, overlong=overlong)  # fmt: skip
    comps = {name: list(fn(batch)) for name, fn in COMPONENTS.items() if getattr(weights, name)}
    totals = np.array(
        [combine({k: v[i] for k, v in comps.items()}, weights, rules, bad_search=o.bad_search)
         for i, o in enumerate(outcomes)], np.float32,
    )  # fmt: skip
    arrays = {k: np.array([math.nan if x is None else x for x in v], np.float32) for k, v in comps.items()}
    metrics: dict[str, float] = dict(batch.answers.metrics) if "answer" in comps else {}
    for name, values in arrays.items():
        have = ~np.isnan(values)
        metrics[f"reward/{name}"] = float(values[have].mean()) if have.any() else math.nan
        metrics[f"reward/{name}_missing"] = float((~have).sum())
    metrics["reward/total"] = float(totals.mean()) if len(totals) else math.nan
    metrics["reward/format_ok"] = float(np.mean(batch.fmt)) if outcomes else math.nan
    reasons = batch.answers.reasons if "answer" in comps else [""] * len(outcomes)
    return Scored(totals, arrays, np.array(batch.fmt) == 1.0, reasons, metrics)
