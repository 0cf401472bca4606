"""Assembled reward components and totals: stage 3 under med_r3 against our port of the authors'
reward (tests/authors_reference.py: `compute_score` of `contrib/med_reasoning_logical.py`, the
penalties of `contrib/base_with_api.py`, the bad-search and overlong rules of
`reward_manager/diagnosis_with_search.py`), the gate under both protocols, and our stages 1-2
against values worked by hand."""

import json
import math

import numpy as np
import pytest

from medr3_jax.data.records import QARecord
from medr3_jax.protocol import MED_R3, SEARCH_R1
from medr3_jax.rewards.combine import RewardRules, RewardWeights
from medr3_jax.rewards.scoring import COMPONENTS, Outcome, OverlongConfig, score_outcomes
from tests import authors_reference as ref

QUESTION = "Which organ makes insulin?"
GOLD = QARecord(id="q1", dataset="medqa", question=QUESTION, options={"A": "Liver", "B": "Pancreas", "C": "Spleen"},
                answer="B", answer_text="Pancreas", evidence_ids=("Cardiology_3", "Y"))  # fmt: skip
NO_GOLD_EVIDENCE = QARecord(id="q2", dataset="medqa", question=QUESTION, options={"A": "Liver", "B": "Pancreas"},
                            answer="B", answer_text="Pancreas")  # fmt: skip


class StubJudge:
    """Replies with a score chosen by the answer text in the prompt; None for 'FAIL' answers."""

    def __init__(self, scores: dict[str, float | None]):
        self.scores, self.asked = scores, []

    def complete(self, prompts):
        self.asked += prompts
        out = []
        for prompt in prompts:
            answer = prompt.split("## Student's Answer:\n")[1].split("\n## Correct Answer:")[0]
            score = self.scores[answer]
            out.append(None if score is None else json.dumps({"reason": f"graded {answer}", "score": score}))
        return out


class StubGraph:
    """The best reasoning-graph score per think text (what `GraphReward` returns)."""

    def __init__(self, value: float):
        self.value, self.calls = value, []

    def __call__(self, thinks, refs):
        self.calls.append(list(thinks))
        return [self.value] * len(thinks)


# (response after the prompt's <think>, judge score for its answer (None: the judge fails), tokens, bad search)
CASES = [
    (
        "The pancreas makes insulin in its beta cells, as the documents say.</think><answer>Pancreas</answer>",
        2,
        300,
        False,
    ),
    (
        "Beta cells.<search>insulin organ</search><document>Islets of the pancreas.</document>So the pancreas."
        "</think><answer>The pancreas, mostly</answer>",
        1,
        900,
        False,
    ),
    ("It must be the liver.</think><answer>Liver</answer>", 0, 1200, False),
    ("Long reasoning about glucose.</think><answer>Pancreas</answer> and more", 2, 100, False),  # malformed: gated
    ("no tags", 2, 50, False),  # malformed: gated
    ("x<search></search>", 2, 1500, True),  # a bad search: -0.1 plus overlong
    ("胰腺产生胰岛素。</think><answer>Pancreas</answer>", 2, 1900, False),  # language penalty on the think
]
MAX_LEN, BUFFER = 2048, 439


@pytest.mark.parametrize("graph_value", [None, 0.5, -0.3])
def test_stage3_med_r3_equals_the_authors_reward(graph_value):
    answers = {MED_R3.think_and_answer("<think>" + r)[1]: s for r, s, _, _ in CASES}
    judge = StubJudge(answers)
    graph = StubGraph(graph_value) if graph_value is not None else None
    outcomes = [Outcome("<think>" + r, n, bad, question=QUESTION) for r, _, n, bad in CASES]
    scored = score_outcomes(outcomes, [GOLD] * len(CASES), RewardWeights.stage3(), protocol=MED_R3, retrieval=True,
                            max_response_tokens=MAX_LEN, judge=judge, graph=graph)  # fmt: skip
    expected = [ref.manager_reward(r, QUESTION, s, graph_value, bad, n, MAX_LEN, BUFFER) for r, s, n, bad in CASES]
    np.testing.assert_allclose(scored.totals, expected, atol=1e-6)
    # The judge is asked only about well-formed, well-searched rows (their gate), once each.
    assert len(judge.asked) == 4
    assert scored.format_ok.tolist() == [True, True, True, False, False, False, True]
    assert scored.answer_reasons[:4] == [
        "graded Pancreas",
        "graded The pancreas, mostly",
        "graded Liver",
        "FORMAT_WRONG",
    ]
    assert scored.answer_reasons[5] == "BAD_SEARCH" and np.isnan(scored.components["answer"][5])
    if graph is not None:
        assert len(graph.calls[0]) == 4  # graph terms only where the judge graded the answer
        assert np.isnan(scored.components["graph"][3]) and scored.components["graph"][0] == pytest.approx(graph_value)


def test_a_failed_judge_falls_back_to_the_rules_where_the_authors_give_0_1():
    response = "The pancreas makes insulin in its beta cells.</think><answer>Pancreas</answer>"
    judge = StubJudge({"Pancreas": None})
    scored = score_outcomes([Outcome("<think>" + response, 10, question=QUESTION)], [GOLD], RewardWeights.stage3(),
                            retrieval=True, max_response_tokens=MAX_LEN, judge=judge, graph=StubGraph(0.5))  # fmt: skip
    theirs = ref.manager_reward(response, QUESTION, None, 0.5, False, 10, MAX_LEN, BUFFER)
    assert theirs == pytest.approx(0.1)  # their default, and no graph term
    assert scored.totals[0] == pytest.approx(1.0)  # ours: the rules grade it correct (documented deviation)
    assert len(judge.asked) == 1  # a failed request is not asked again here: the HTTP client retries it
    assert scored.metrics["reward/judge_fallbacks"] == 1 and np.isnan(scored.components["graph"][0])


def test_the_gate_under_search_r1():
    rounds = (
        "<think>a</think><search>q</search><document>d</document><think>the pancreas</think><answer>Pancreas</answer>"
    )
    inside = "<think>a<search>q</search><document>d</document>the pancreas</think><answer>Pancreas</answer>"
    outcomes = [Outcome(rounds, 10, question=QUESTION), Outcome(inside, 10, question=QUESTION)]
    for protocol, ok in ((SEARCH_R1, [True, False]), (MED_R3, [False, True])):
        scored = score_outcomes(outcomes, [GOLD] * 2, RewardWeights.stage3(), protocol=protocol, retrieval=True,
                                max_response_tokens=MAX_LEN)  # fmt: skip
        assert scored.format_ok.tolist() == ok
        assert scored.components["answer"].tolist() == [1.0 if o else pytest.approx(0.1) for o in ok]
        assert [r == "FORMAT_WRONG" for r in scored.answer_reasons] == [not o for o in ok]
    ungated = score_outcomes(outcomes, [GOLD] * 2, RewardWeights.stage3(), protocol=SEARCH_R1, retrieval=True,
                             max_response_tokens=MAX_LEN, rules=RewardRules(format_gate=False))  # fmt: skip
    assert ungated.components["answer"].tolist() == [1.0, 1.0]  # graded anyway


def test_stage1_by_hand():
    good = Outcome("<think>Insulin is made by beta cells of the pancreas.</think><answer>Pancreas</answer>", 40)
    bad = Outcome("<think>hmm</think>", 180)
    scored = score_outcomes([good, bad], [GOLD, GOLD], RewardWeights.stage1(), retrieval=False,
                            max_response_tokens=192)  # fmt: skip
    # good: format 1 + answer 1.0; |T| = 45 chars >= 2 |A| = 16: no think penalty; language 0; overlong 0
    # bad: format 0 + answer 0.1 (gated) - 0.1 format - 0.1 think (no answer) - 0.1 language (empty answer)
    #      + overlong (192 - 41 = 151 expected): -(180 - 151) / 41
    assert scored.totals[0] == pytest.approx(2.0)
    assert scored.totals[1] == pytest.approx(0.1 - 0.3 - 29 / 41, abs=1e-6)
    assert scored.components["format"].tolist() == [1.0, 0.0]
    assert scored.metrics["reward/format_gated"] == 1 and scored.metrics["reward/answer_by_rules"] == 1
    assert "evidence" not in scored.components  # weight 0: not computed


def test_stage2_with_evidence_and_a_bad_search():
    searched = Outcome("<think>a<search>q</search><document>d</document>b</think><answer>Pancreas</answer>",
                       60, retrieved_ids=("Cardiology_3", "X"))  # fmt: skip
    flagged = Outcome("<think>x<search></search>", 20, bad_search=True)
    unlabelled = Outcome("<think>x</think><answer>Pancreas</answer>", 20)
    scored = score_outcomes([searched, flagged, unlabelled], [GOLD, GOLD, NO_GOLD_EVIDENCE], RewardWeights.stage2(),
                            retrieval=True, max_response_tokens=192)  # fmt: skip
    # searched: format 1 + evidence 1/2 + 0.5 x answer 1.0 = 2.0
    # flagged: the bad-search value replaces the rest: -0.1 (+ overlong 0)
    # unlabelled: format 1 + evidence None (no gold: counts 0, reported missing) + 0.5 x 1.0 = 1.5
    np.testing.assert_allclose(scored.totals, [2.0, -0.1, 1.5], atol=1e-6)
    assert np.isnan(scored.components["evidence"][2]) and scored.metrics["reward/evidence_missing"] == 1
    assert scored.metrics["reward/evidence"] == pytest.approx(0.25)


def test_overlong_follows_the_rollout_cap_and_the_buffer_knob():
    outcome = [Outcome("<think>long thinking here</think><answer>Pancreas</answer>", 1000)]
    weights = RewardWeights._only(overlong=1.0)
    assert score_outcomes(outcome, [GOLD], weights, retrieval=True, max_response_tokens=1024).totals[0] == (
        pytest.approx(-(1000 - (1024 - 219)) / 219)  # 3/14 of 1024 = 219
    )
    fixed = score_outcomes(outcome, [GOLD], weights, retrieval=True, max_response_tokens=1024,
                           overlong=OverlongConfig(buffer=100))  # fmt: skip
    assert fixed.totals[0] == pytest.approx(-(1000 - 924) / 100)
    with pytest.raises(ValueError, match="OverlongConfig.buffer"):
        OverlongConfig(buffer=0)
    with pytest.raises(ValueError, match="exceeds the response cap"):
        OverlongConfig(buffer=2000).buffer_for(1024)


def test_every_weight_has_a_component_and_only_weighted_ones_run():
    assert list(COMPONENTS) == list(RewardWeights().as_dict())
    judge = StubJudge({})
    scored = score_outcomes([Outcome("<think>t</think><answer>Pancreas</answer>", 10)], [GOLD],
                            RewardWeights._only(format=1.0), retrieval=True, max_response_tokens=64, judge=judge)  # fmt: skip
    assert list(scored.components) == ["format"] and judge.asked == []  # the answer (and its judge) never ran
    assert not math.isnan(scored.metrics["reward/total"])
