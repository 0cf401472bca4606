"""The scalar reward: a weighted sum of named components, with one weight set per stage.

    weights = RewardWeights.stage1()
    combine({"strict_format": 1.0, "answer": 0.4, "format_penalty": 0.0, "think_length": -0.02,
             "language": 0.0, "overlong": 0.0}, weights)                                  -> 1.38

Components are computed by the rollout/trainer (one value per row, logged under `reward/`);
penalties are already negative, so every weight is non-negative.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping


@dataclasses.dataclass(frozen=True, kw_only=True)
class RewardWeights:
    """Weight of each reward component; a zero weight means the component is not used.
    The defaults are stage 3's (answer + 0.8 x reasoning graph + penalties)."""

    strict_format: float = 0.0  # stage-1 format F (no retrieval)
    search_format: float = 0.0  # stage-2/3 search-aware format
    answer: float = 1.0  # 1.0 / 0.4 / 0.1 rubric, 0 without an answer
    graph: float = 0.8  # reasoning-graph score vs. reference graphs
    evidence: float = 0.0  # gold passage recall of the searches
    format_penalty: float = 1.0  # -0.1 (1 - F)
    think_length: float = 1.0  # -(1 - s) / 10
    language: float = 1.0  # -(1 - c) / 10, think and answer
    overlong: float = 1.0  # DAPO soft overlong punishment
    bad_search: float = 1.0  # -0.1 for a self-written <document> or empty/double <search>

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"reward weight {field.name} must be a finite number >= 0, got {value!r}")

    @classmethod
    def _only(cls, **weights: float) -> RewardWeights:
        """These weights, every other one 0."""
        return cls(**dict.fromkeys(_NAMES, 0.0) | weights)

    @classmethod
    def stage1(cls) -> RewardWeights:
        """Reasoning, no retrieval: strict format + answer + penalties."""
        return cls._only(
            strict_format=1.0, answer=1.0, format_penalty=1.0, think_length=1.0, language=1.0, overlong=1.0
        )

    @classmethod
    def stage2(cls) -> RewardWeights:
        """Retrieval: search-aware format + evidence recall + answer at half weight + search penalty."""
        return cls._only(search_format=1.0, evidence=1.0, answer=0.5, bad_search=1.0, overlong=1.0)

    @classmethod
    def stage3(cls) -> RewardWeights:
        """Joint: answer + 0.8 x reasoning graph + penalties (the defaults)."""
        return cls()

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RewardWeights))


def combine(components: Mapping[str, float | None], weights: RewardWeights) -> float:
    """Sum of weight x value over the components with a non-zero weight. A None value (no gold
    evidence, graph disabled) contributes 0. A name that is not a weight, a weighted component
    missing from `components`, or a non-finite weighted value raises ValueError naming it."""
    unknown = sorted(set(components) - set(_NAMES))
    if unknown:
        raise ValueError(f"unknown reward components {unknown}; known: {list(_NAMES)}")
    total = 0.0
    for name in _NAMES:
        weight = getattr(weights, name)
        if weight == 0:
            continue
        if name not in components:
            raise ValueError(f"reward component {name!r} has weight {weight} but was not computed")
        value = components[name]
        if value is None:
            continue
        if not math.isfinite(value):
            raise ValueError(f"reward component {name!r} is not finite: {value}")
        total += weight * value
    return total
