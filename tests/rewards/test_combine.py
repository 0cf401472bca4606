"""Reward combination: weights, the authors' rules (format gate, bad search replacing the reward,
clamp of answer + graph) and the stage presets."""

import dataclasses
import math

import pytest

from medr3_jax.rewards.combine import NAMES, RewardRules, RewardWeights, combine

STAGE1 = {"format": 1.0, "answer": 0.4, "format_penalty": 0.0, "think_length": -0.02, "language": 0.0, "overlong": 0.0}
STAGE3 = {"answer": 1.0, "graph": 0.5, "format_penalty": -0.1, "think_length": -0.05, "language": 0.0,
          "overlong": -0.25, "bad_search": 0.0}  # fmt: skip


def test_presets():
    assert {k: v for k, v in RewardWeights.stage1().as_dict().items() if v} == {
        "format": 1.0, "answer": 1.0, "format_penalty": 1.0, "think_length": 1.0, "language": 1.0, "overlong": 1.0,
    }  # fmt: skip
    assert {k: v for k, v in RewardWeights.stage2().as_dict().items() if v} == {
        "format": 1.0, "evidence": 1.0, "answer": 0.5, "bad_search": 1.0, "overlong": 1.0,
    }  # fmt: skip
    assert RewardWeights.stage3() == RewardWeights()
    assert {k: v for k, v in RewardWeights().as_dict().items() if v} == {
        "answer": 1.0, "graph": 0.8, "format_penalty": 1.0, "think_length": 1.0, "language": 1.0, "overlong": 1.0,
        "bad_search": 1.0,
    }  # fmt: skip
    assert RewardRules() == RewardRules(format_gate=True, bad_search_replaces=True, clamp_answer_graph=True)
    assert NAMES == tuple(RewardWeights().as_dict())


def test_weights_are_frozen_keyword_only_and_validated():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RewardWeights().answer = 2.0
    with pytest.raises(TypeError):
        RewardWeights(1.0)
    for bad in (-0.1, math.nan, math.inf, "1"):
        with pytest.raises(ValueError, match="RewardWeights.graph"):
            RewardWeights(graph=bad)


def test_combine_stage1_is_the_weighted_sum():
    assert combine(STAGE1, RewardWeights.stage1()) == pytest.approx(1.38)


def test_combine_stage2_with_and_without_gold_evidence():
    components = {"format": 1.0, "evidence": 0.5, "answer": 0.4, "bad_search": 0.0, "overlong": -0.25}
    assert combine(components, RewardWeights.stage2()) == pytest.approx(1.0 + 0.5 + 0.2 - 0.25)
    assert combine(components | {"evidence": None}, RewardWeights.stage2()) == pytest.approx(0.95)


def test_combine_stage3():
    assert combine(STAGE3, RewardWeights.stage3()) == pytest.approx(1.0 + 0.4 - 0.1 - 0.05 - 0.25)
    assert combine(STAGE3 | {"graph": None}, RewardWeights.stage3()) == pytest.approx(0.6)  # no graph term


def test_answer_plus_graph_is_clamped_at_zero_before_the_penalties():
    negative = STAGE3 | {"answer": 0.1, "graph": -0.3}  # 0.1 + 0.8 * -0.3 = -0.14 -> 0
    assert combine(negative, RewardWeights.stage3()) == pytest.approx(0.0 - 0.1 - 0.05 - 0.25)
    unclamped = RewardRules(clamp_answer_graph=False)
    assert combine(negative, RewardWeights.stage3(), unclamped) == pytest.approx(-0.14 - 0.1 - 0.05 - 0.25)


def test_a_bad_search_replaces_the_reward_but_keeps_the_overlong_term():
    flagged = STAGE3 | {"bad_search": -0.1}
    assert combine(flagged, RewardWeights.stage3(), bad_search=True) == pytest.approx(-0.1 - 0.25)
    added = RewardRules(bad_search_replaces=False)
    assert combine(flagged, RewardWeights.stage3(), added, bad_search=True) == pytest.approx(1.0 + 0.4 - 0.4 - 0.1)


def test_zero_weight_components_are_ignored():
    # evidence has weight 0 in stage 1: present, even as None or NaN, it changes nothing
    assert combine(STAGE1 | {"evidence": 0.9, "graph": None, "bad_search": math.nan}, RewardWeights.stage1()) == (
        pytest.approx(1.38)
    )


def test_combine_fails_loudly():
    with pytest.raises(ValueError, match="answr"):
        combine(STAGE1 | {"answr": 1.0}, RewardWeights.stage1())
    missing = {k: v for k, v in STAGE1.items() if k != "think_length"}
    with pytest.raises(ValueError, match="think_length"):
        combine(missing, RewardWeights.stage1())
    with pytest.raises(ValueError, match="answer"):
        combine(STAGE1 | {"answer": math.nan}, RewardWeights.stage1())
