"""Assembled reward components and totals per stage, against values worked by hand."""

import math

import numpy as np
import pytest

from medr3_jax.data.records import QARecord
from medr3_jax.rewards.combine import RewardWeights
from medr3_jax.rewards.scoring import Outcome, score

GOLD = QARecord(id="q1", dataset="medqa", question="Which organ makes insulin?", options={"A": "Liver", "B": "Pancreas"},
                answer="B", answer_text="Pancreas", evidence_ids=("Cardiology_3", "Y"))  # fmt: skip
NO_GOLD_EVIDENCE = QARecord(id="q2", dataset="medqa", question="Which organ makes insulin?",
                            options={"A": "Liver", "B": "Pancreas"}, answer="B", answer_text="Pancreas")  # fmt: skip


def test_stage1():
    good = Outcome("<think>Insulin is made by beta cells of the pancreas.</think><answer>B. Pancreas</answer>", 40)
    bad = Outcome("<think>hmm</think>", 12000)
    scored = score([good, bad], [GOLD, GOLD], RewardWeights.stage1(), retrieval=False)
    # good: strict 1 + answer 1.0; |T|/|A| = 9/2 -> capped at 2 -> s = 1: no think penalty
    # bad: strict 0, no answer 0, format -0.1, think |T|=1,|A|=max(0,1) -> s = (1-e^-1)/(1-e^-2)
    #      -> -(1-s)/10 = -0.0268941; overlong (11264 - 12000)/3072 = -0.2395833
    s = (1 - math.exp(-1)) / (1 - math.exp(-2))
    assert scored.totals[0] == pytest.approx(2.0)
    assert scored.totals[1] == pytest.approx(-0.1 - (1 - s) / 10 - 736 / 3072, abs=1e-6)
    assert scored.components["strict_format"].tolist() == [1.0, 0.0]
    assert scored.metrics["reward/no_answer"] == 1 and scored.metrics["reward/answer_by_rules"] == 1
    assert "evidence" not in scored.components  # weight 0: not computed


def test_stage2_with_evidence_and_a_bad_search():
    searched = Outcome("<think>a</think><search>q</search><document>d</document><think>b</think><answer>B</answer>",
                       60, retrieved_ids=("Cardiology_3", "X"))  # fmt: skip
    flagged = Outcome("<think>x</think><answer>A</answer>", 20, bad_search=True)
    unlabelled = Outcome("<think>x</think><answer>B</answer>", 20)
    scored = score(
        [searched, flagged, unlabelled], [GOLD, GOLD, NO_GOLD_EVIDENCE], RewardWeights.stage2(), retrieval=True
    )
    # searched: format 1 + evidence 1/2 + 0.5 x answer 1.0 = 2.0
    # flagged: format 1 (no search rounds) + evidence 0/2 + 0.5 x 0.1 (wrong) - 0.1 = 0.95
    # unlabelled: format 1 + evidence None (no gold: counts 0, reported missing) + 0.5 x 1.0 = 1.5
    np.testing.assert_allclose(scored.totals, [2.0, 0.95, 1.5], atol=1e-6)
    assert np.isnan(scored.components["evidence"][2]) and scored.metrics["reward/evidence_missing"] == 1
    assert scored.metrics["reward/evidence"] == pytest.approx(0.25)


class StubJudge:
    def __init__(self, replies):
        self.replies = replies

    def complete(self, prompts):
        assert len(prompts) == len(self.replies)
        return list(self.replies)


def test_judge_grades_with_rule_fallback():
    outcomes = [Outcome("<think>t</think><answer>B</answer>", 10), Outcome("<think>t</think><answer>A</answer>", 10),
                Outcome("<think>t</think>", 10)]  # fmt: skip
    judge = StubJudge(['{"grade": 1}', None])  # the third row has no answer: not sent
    weights = RewardWeights(
        answer=1.0, graph=0.0, format_penalty=0, think_length=0, language=0, overlong=0, bad_search=0
    )
    scored = score(outcomes, [GOLD] * 3, weights, retrieval=True, judge=judge)
    # judge says partial (0.4) for row 0; row 1's judge call failed: rules say wrong (0.1)
    np.testing.assert_allclose(scored.totals, [0.4, 0.1, 0.0], atol=1e-6)
    assert scored.metrics["reward/judge_fallbacks"] == 1 and scored.metrics["reward/answer_by_judge"] == 1


def test_graph_without_a_judge_is_missing_not_fatal():
    scored = score([Outcome("<think>t</think><answer>B</answer>", 10)], [GOLD], RewardWeights.stage3(), retrieval=True)
    assert np.isnan(scored.components["graph"][0]) and scored.metrics["reward/graph_missing"] == 1
    s = (1 - math.exp(-1)) / (1 - math.exp(-2))  # |T| = |A| = 1 word
    assert scored.totals[0] == pytest.approx(1.0 - (1 - s) / 10)  # answer 1.0, graph counts 0, think-length penalty
