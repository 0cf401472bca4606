"""Weighted reward sum and the stage presets."""

import dataclasses
import math

import pytest

from medr3_jax.rewards.combine import RewardWeights, combine

STAGE1 = {
    "strict_format": 1.0,
    "answer": 0.4,
    "format_penalty": 0.0,
    "think_length": -0.02,
    "language": 0.0,
    "overlong": 0.0,
}


def test_presets():
    w = RewardWeights.stage1()
    assert {k: v for k, v in w.as_dict().items() if v} == {
        "strict_format": 1.0,
        "answer": 1.0,
        "format_penalty": 1.0,
        "think_length": 1.0,
        "language": 1.0,
        "overlong": 1.0,
    }
    w = RewardWeights.stage2()
    assert {k: v for k, v in w.as_dict().items() if v} == {
        "search_format": 1.0,
        "evidence": 1.0,
        "answer": 0.5,
        "bad_search": 1.0,
        "overlong": 1.0,
    }
    assert RewardWeights.stage3() == RewardWeights()
    assert {k: v for k, v in RewardWeights().as_dict().items() if v} == {
        "answer": 1.0,
        "graph": 0.8,
        "format_penalty": 1.0,
        "think_length": 1.0,
        "language": 1.0,
        "overlong": 1.0,
        "bad_search": 1.0,
    }


def test_weights_are_frozen_keyword_only_and_validated():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RewardWeights().answer = 2.0
    with pytest.raises(TypeError):
        RewardWeights(1.0)
    for bad in (-0.1, math.nan, math.inf, "1"):
        with pytest.raises(ValueError, match="graph"):
            RewardWeights(graph=bad)


def test_combine_stage1():
    assert combine(STAGE1, RewardWeights.stage1()) == pytest.approx(1.38)


def test_combine_stage2_with_and_without_gold_evidence():
    components = {"search_format": 1.0, "evidence": 0.5, "answer": 0.4, "bad_search": -0.1, "overlong": -0.25}
    assert combine(components, RewardWeights.stage2()) == pytest.approx(1.0 + 0.5 + 0.2 - 0.1 - 0.25)
    assert combine(components | {"evidence": None}, RewardWeights.stage2()) == pytest.approx(0.85)


def test_combine_stage3():
    components = {
        "answer": 1.0,
        "graph": 0.5,
        "format_penalty": -0.1,
        "think_length": -0.05,
        "language": 0.0,
        "overlong": 0.0,
        "bad_search": 0.0,
    }
    assert combine(components, RewardWeights.stage3()) == pytest.approx(1.0 + 0.4 - 0.1 - 0.05)
    assert combine(components | {"graph": None}, RewardWeights.stage3()) == pytest.approx(0.85)  # graph off


def test_zero_weight_components_are_ignored():
    # evidence has weight 0 in stage 1: present, even as None or NaN, it changes nothing
    assert combine(
        STAGE1 | {"evidence": 0.9, "graph": None, "search_format": math.nan}, RewardWeights.stage1()
    ) == pytest.approx(1.38)


def test_combine_fails_loudly():
    with pytest.raises(ValueError, match="answr"):
        combine(STAGE1 | {"answr": 1.0}, RewardWeights.stage1())
    missing = {k: v for k, v in STAGE1.items() if k != "think_length"}
    with pytest.raises(ValueError, match="think_length"):
        combine(missing, RewardWeights.stage1())
    with pytest.raises(ValueError, match="answer"):
        combine(STAGE1 | {"answer": math.nan}, RewardWeights.stage1())
