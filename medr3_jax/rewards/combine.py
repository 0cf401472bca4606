"""The scalar reward: named components combined by weights and by the authors' rules, with one
weight set per stage.

    weights, rules = RewardWeights.stage3(), RewardRules()
    combine({"answer": 1.0, "graph": 0.5, "format_penalty": 0.0, "think_length": -0.02,
             "language": 0.0, "overlong": 0.0, "bad_search": 0.0}, weights, rules)    -> 1.38

Components are computed by `rewards.scoring` (one value per row, logged under `reward/`);
penalties are already negative, so every weight is non-negative.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

from medr3_jax.config_types import check_field_types


@dataclasses.dataclass(frozen=True, kw_only=True)
class RewardWeights:
    """Weight of each reward component; a zero weight means the component is not computed.
    The defaults are stage 3's, the authors' reward (answer + 0.8 x reasoning graph + penalties)."""

    format: float = 0.0  # the protocol's format grammar F (1 or 0) as a reward of its own (ours)
    answer: float = 1.0  # the rubric's 1.0 / 0.4 / 0.1 (0.1 without a passing format under the gate)
    graph: float = 0.8  # reasoning-graph score vs. reference graphs (their alpha_r)
    evidence: float = 0.0  # gold passage recall of the searches (ours)
    format_penalty: float = 1.0  # -0.1 (1 - F)
    think_length: float = 1.0  # -(1 - s) / 10
    language: float = 1.0  # -(1 - c) / 10, think and answer
    overlong: float = 1.0  # DAPO soft overlong punishment
    bad_search: float = 1.0  # -0.1 for a self-written <document> or an empty/double <search>

    def __post_init__(self) -> None:
        check_field_types(self)
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"RewardWeights.{field.name} must be a finite number >= 0, got {value!r}")

    @classmethod
    def _only(cls, **weights: float) -> RewardWeights:
        """These weights, every other one 0."""
        return cls(**dict.fromkeys(NAMES, 0.0) | weights)

    @classmethod
    def stage1(cls) -> RewardWeights:
        """Reasoning, no retrieval (ours): format + answer + penalties."""
        return cls._only(format=1.0, answer=1.0, format_penalty=1.0, think_length=1.0, language=1.0, overlong=1.0)

    @classmethod
    def stage2(cls) -> RewardWeights:
        """Retrieval (ours): format + evidence recall + answer at half weight + bad search + overlong."""
        return cls._only(format=1.0, evidence=1.0, answer=0.5, bad_search=1.0, overlong=1.0)

    @classmethod
    def stage3(cls) -> RewardWeights:
        """Joint: the authors' reward (the defaults)."""
        return cls()

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RewardWeights))
_CORE = ("answer", "graph")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RewardRules:
    """How the components combine beyond a weighted sum; each default is the authors' rule
    (GitHub 8023looker/Med-R3).

    format_gate: a response failing the protocol's format gets the answer component 0.1 with
      no judge call and no graph term (`compute_score` in `contrib/med_reasoning_logical.py`);
      off: its answer is graded anyway (0 when it has no answer).
    bad_search_replaces: a row flagged for a bad search is scored weight x -0.1 plus the
      overlong term, nothing else (`DiagnosisWithSearchRewardManager._compute_score_task`);
      off: the bad-search term is added to the others.
    clamp_answer_graph: answer + graph is floored at 0 (their max(r + 0.8 S_KG, 0)).
    """

    format_gate: bool = True
    bad_search_replaces: bool = True
    clamp_answer_graph: bool = True

    def __post_init__(self) -> None:
        check_field_types(self)


def combine(
    components: Mapping[str, float | None], weights: RewardWeights, rules: RewardRules = RewardRules(),
    *, bad_search: bool = False,
) -> float:  # fmt: skip
    """The row's reward. A None value (no gold evidence, no graph) contributes 0. A name that
    is not a weight, a weighted component missing from `components`, or a non-finite weighted
    value raises ValueError naming it. `bad_search`: the rollout flagged the row."""
    unknown = sorted(set(components) - set(NAMES))
    if unknown:
        raise ValueError(f"unknown reward components {unknown}; known: {list(NAMES)}")
    terms: dict[str, float] = {}
    for name in NAMES:
        weight = getattr(weights, name)
        if weight == 0:
            continue
        if name not in components:
            raise ValueError(f"reward component {name!r} has weight {weight} but was not computed")
        value = components[name]
        if value is not None and not math.isfinite(value):
            raise ValueError(f"reward component {name!r} is not finite: {value}")
        terms[name] = 0.0 if value is None else weight * value
    if bad_search and rules.bad_search_replaces:
        return terms.get("bad_search", 0.0) + terms.get("overlong", 0.0)
    core = sum(terms.get(name, 0.0) for name in _CORE)
    if rules.clamp_answer_graph:
        core = max(core, 0.0)
    return core + sum(value for name, value in terms.items() if name not in _CORE)
