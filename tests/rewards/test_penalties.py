"""Penalties by the authors' formulas: against hand-computed values (exp(-0.5) = 0.60653066,
exp(-1) = 0.36787944, exp(-2) = 0.13533528) and against our port of their code
(tests/authors_reference.py: `RewardActorBaseWithApi.add_penalty`,
`score_language_consistency`, the DAPO overlong term of `DiagnosisWithSearchRewardManager`)."""

import math

import pytest

from medr3_jax.protocol import MED_R3
from medr3_jax.rewards.penalties import (
    bad_search_penalty,
    format_penalty,
    has_chinese,
    language_penalties,
    language_penalty,
    overlong_buffer,
    overlong_penalty,
    think_length_penalty,
)
from tests import authors_reference as ref


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
        ("abcd", "ab", 0.0),  # |T|/|A| = 2 characters: s = 1
        ("w" * 500, "B", 0.0),  # ratio capped at 2
        ("a", "ab", -(1 - 0.39346934 / 0.86466472) / 10),  # ratio 0.5: s = 0.45505
        ("ab", "ab", -(1 - 0.63212056 / 0.86466472) / 10),  # ratio 1: s = 0.73106
        ("", "B", -0.1),  # no thinking: s = 0
        ("long thinking", "", -0.1),  # no answer: s = 0 (their rule)
    ],
)
def test_think_length_penalty_counts_characters(think, answer, penalty):
    assert think_length_penalty(think, answer) == pytest.approx(penalty, abs=1e-8)


def test_has_chinese_is_their_pattern():
    assert has_chinese("胰岛素降低血糖") and has_chinese("insulin 胰")
    assert not has_chinese("インスリン") and not has_chinese("인슐린")  # kana and hangul are not in their range
    assert not has_chinese("Insulin lowers glucose.") and not has_chinese("")


EN, ZH = "a" * 200, "中" * 200


@pytest.mark.parametrize(
    "question, text, penalty",
    [
        ("What lowers glucose?", EN + EN, 0.0),
        ("What lowers glucose?", EN + ZH, -0.05),  # c = 1/2
        ("What lowers glucose?", ZH + EN + EN + EN, -0.025),  # c = 3/4
        ("What lowers glucose?", "a" * 199 + "中" + EN, -0.05),  # one character marks its whole chunk
        ("什么降低血糖？", EN + EN, -0.1),  # c = 0
        ("什么降低血糖？", ZH + "中文", 0.0),  # the short last chunk counts too
        ("What lowers glucose?", EN + " " * 50, 0.0),  # a whitespace chunk has no Chinese: it matches
        ("What lowers glucose?", "", -0.1),  # an empty text scores c = 0
    ],
)
def test_language_penalty(question, text, penalty):
    assert language_penalty(question, text) == pytest.approx(penalty)
    assert language_penalty(question, text) == pytest.approx(-(1 - ref.language_consistency(question, text)) / 10)


def test_language_penalty_chunk_size():
    assert language_penalty("Q?", "ab中中", chunk=2) == pytest.approx(-0.05)
    with pytest.raises(ValueError):
        language_penalty("Q?", "text", chunk=0)


def test_language_penalties_sums_think_and_answer():
    assert language_penalties("What lowers glucose?", EN, "胰岛素") == pytest.approx(-0.1)
    assert language_penalties("什么降低血糖？", EN + ZH, "Insulin") == pytest.approx(-0.15)
    assert _is_zero(language_penalties("Q?", EN, "B"))


RESPONSES = [
    "Insulin is made by beta cells and lowers glucose.</think><answer>Insulin</answer>",
    "short</think><answer>A long answer that is much longer than the thinking</answer>",
    "a<search>q</search><document>retrieved text that must not count</document>b</think><answer>xyz</answer>",
    "思考过程很长很长很长。</think><answer>胰岛素</answer>",
    "no tags at all",
    "x</think><answer></answer>",
    "",
]


@pytest.mark.parametrize("response", RESPONSES)
@pytest.mark.parametrize("question", ["Which hormone lowers glucose?", "哪种激素降低血糖？"])
def test_penalties_sum_to_the_authors_add_penalty(response, question):
    text = "<think>" + response
    think, answer = MED_R3.think_and_answer(text)
    ours = (
        format_penalty(MED_R3.format_score(text, retrieval=True))
        + think_length_penalty(think, answer)
        + language_penalties(question, think, answer)
    )
    assert ours == pytest.approx(ref.add_penalty(0.0, response, question), abs=1e-9)


@pytest.mark.parametrize(
    "length, penalty",
    [
        (0, 0.0),
        (11264, 0.0),  # max_length - buffer
        (11265, -1 / 3072),
        (12800, -0.5),
        (14336, -1.0),
        (14337, -1.0),  # bounded below (their term would keep falling; their rollout never gets here)
        (100_000, -1.0),
    ],
)
def test_overlong_penalty_at_the_authors_sizes(length, penalty):
    assert overlong_buffer(14336) == 3072
    assert overlong_penalty(length, 14336, 3072) == pytest.approx(penalty)
    if length <= 14336:
        assert overlong_penalty(length, 14336, 3072) == pytest.approx(min(-(length - 11264) / 3072, 0.0))


def test_overlong_penalty_small_and_scaled_buffer():
    assert [overlong_penalty(n, max_length=10, buffer=4) for n in (6, 7, 8, 10, 11)] == [0.0, -0.25, -0.5, -1.0, -1.0]
    assert overlong_buffer(2048) == 439 and overlong_buffer(192) == 41 and overlong_buffer(1) == 1
    with pytest.raises(ValueError):
        overlong_penalty(5, max_length=10, buffer=0)
    with pytest.raises(ValueError):
        overlong_penalty(5, max_length=10, buffer=11)


def test_bad_search_penalty():
    assert bad_search_penalty(True) == -0.1
    assert _is_zero(bad_search_penalty(False))
