"""Penalties against hand-computed values (exp(-0.5) = 0.60653066, exp(-1) = 0.36787944,
exp(-2) = 0.13533528)."""

import math

import pytest

from medr3_jax.rewards.penalties import (
    bad_search_penalty,
    format_penalty,
    is_cjk,
    language_penalties,
    language_penalty,
    overlong_penalty,
    think_length_penalty,
)


def _is_zero(x):  # 0.0, not -0.0
    return x == 0.0 and math.copysign(1.0, x) == 1.0


@pytest.mark.parametrize("f, penalty", [(1.0, 0.0), (0.0, -0.1), (0.5, -0.05)])
def test_format_penalty(f, penalty):
    assert format_penalty(f) == pytest.approx(penalty)
    assert format_penalty(f) <= 0


def test_format_penalty_rejects_scores_outside_0_1():
    assert _is_zero(format_penalty(1.0))
    with pytest.raises(ValueError):
        format_penalty(1.5)


@pytest.mark.parametrize(
    "think, answer, penalty",
    [
        ("w w w w", "B. Insulin", 0.0),  # |T|/|A| = 2: s = 1
        ("w " * 50, "B", 0.0),  # ratio capped at 2
        ("w", "B. Insulin", -(1 - 0.39346934 / 0.86466472) / 10),  # ratio 0.5: s = 0.45505
        ("w w", "B. Insulin", -(1 - 0.63212056 / 0.86466472) / 10),  # ratio 1: s = 0.73106
        ("w", "", -(1 - 0.63212056 / 0.86466472) / 10),  # |A| at least 1
        ("", "B", -0.1),  # no thinking: s = 0
        ("  \n ", "", -0.1),
    ],
)
def test_think_length_penalty(think, answer, penalty):
    assert think_length_penalty(think, answer) == pytest.approx(penalty, abs=1e-8)


def test_think_length_penalty_values_by_hand():
    assert think_length_penalty("w", "B. Insulin") == pytest.approx(-0.0544946, abs=1e-7)
    assert think_length_penalty("w w", "B. Insulin") == pytest.approx(-0.0268941, abs=1e-7)
    assert _is_zero(think_length_penalty("w w w w", "B. Insulin"))


def test_is_cjk():
    assert is_cjk("胰岛素降低血糖")
    assert is_cjk("インスリン")  # Katakana
    assert is_cjk("ひらがな")  # Hiragana
    assert is_cjk("인슐린")  # Hangul
    assert is_cjk("abcdefg 胰岛素")  # 3 of 10 non-whitespace characters: 30%
    assert not is_cjk("abcdefgh 胰岛")  # 2 of 10
    assert not is_cjk("Insulin lowers glucose.")
    assert not is_cjk("  ")
    assert not is_cjk("")


EN, ZH = "a" * 200, "中" * 200


@pytest.mark.parametrize(
    "question, text, penalty",
    [
        ("What lowers glucose?", EN + EN, 0.0),
        ("What lowers glucose?", EN + ZH, -0.05),  # c = 1/2
        ("What lowers glucose?", ZH + EN + EN + EN, -0.025),  # c = 3/4
        ("什么降低血糖？", EN + EN, -0.1),  # c = 0
        ("什么降低血糖？", ZH + "中文", 0.0),  # the short last chunk counts too
        ("What lowers glucose?", EN + " " * 50, 0.0),  # a whitespace-only chunk is not counted
        ("What lowers glucose?", "", 0.0),  # empty text
        ("什么降低血糖？", " \n ", 0.0),
    ],
)
def test_language_penalty(question, text, penalty):
    assert language_penalty(question, text) == pytest.approx(penalty)


def test_language_penalty_chunk_size():
    assert language_penalty("Q?", "ab中中", chunk=2) == pytest.approx(-0.05)
    with pytest.raises(ValueError):
        language_penalty("Q?", "text", chunk=0)


def test_language_penalties_sums_think_and_answer():
    assert language_penalties("What lowers glucose?", EN, "胰岛素") == pytest.approx(-0.1)
    assert language_penalties("什么降低血糖？", EN + ZH, "Insulin") == pytest.approx(-0.15)
    assert _is_zero(language_penalties("Q?", EN, "B"))


@pytest.mark.parametrize(
    "length, penalty",
    [
        (0, 0.0),
        (11264, 0.0),  # max_length - buffer
        (11265, -1 / 3072),
        (12800, -0.5),
        (14336, -1.0),
        (14337, -1.0),
        (100_000, -1.0),
    ],
)
def test_overlong_penalty_defaults(length, penalty):
    assert overlong_penalty(length) == pytest.approx(penalty)


def test_overlong_penalty_small():
    assert [overlong_penalty(n, max_length=10, buffer=4) for n in (6, 7, 8, 10, 11)] == [0.0, -0.25, -0.5, -1.0, -1.0]
    with pytest.raises(ValueError):
        overlong_penalty(5, max_length=10, buffer=0)
    with pytest.raises(ValueError):
        overlong_penalty(5, max_length=10, buffer=11)


def test_bad_search_penalty():
    assert bad_search_penalty(True) == -0.1
    assert _is_zero(bad_search_penalty(False))
