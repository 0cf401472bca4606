"""The authors' answer rubric (2 same / 1 consistent / 0 wrong -> 1.0 / 0.4 / 0.1, their
`RewardActorMedReasoningLogical.normalize_reward`), and the rule grade against hand-graded answers."""

import pytest

from medr3_jax.data.records import QARecord
from medr3_jax.rewards.answer import BOTTOM_REWARD, Grade, grade_reward, rule_grade
from tests import authors_reference as ref

MC = QARecord(
    id="q1",
    dataset="medqa",
    question="Which hormone lowers blood glucose?",
    options={"A": "Glucagon", "B": "Insulin", "C": "Insulin resistance", "D": "Cortisol"},
    answer="B",
    answer_text="Insulin",
)
OPEN = QARecord(id="q2", dataset="rarearena", question="Diagnosis?", answer_text="Fabry disease")


def test_grade_numbers_are_the_authors():
    assert [int(g) for g in (Grade.WRONG, Grade.CONSISTENT, Grade.SAME)] == [0, 1, 2]
    assert BOTTOM_REWARD == 0.1


@pytest.mark.parametrize("score", [-1, 0, 0.5, 0.99, 1, 1.5, 1.99, 2, 2.5, 3, 10])
def test_grade_reward_equals_their_normalize_reward(score):
    assert grade_reward(score) == ref.normalize_reward(score)
    assert grade_reward(score) in (0.1, 0.4, 1.0)


@pytest.mark.parametrize(
    "answer, grade",
    [
        ("B", Grade.SAME),
        ("B. Insulin", Grade.SAME),
        ("(B)", Grade.SAME),
        ("Option B", Grade.SAME),
        ("insulin", Grade.SAME),  # the option text names the option
        ("The insulin.", Grade.SAME),  # normalised: articles and punctuation go
        ("A", Grade.WRONG),
        ("D. Cortisol", Grade.WRONG),
        ("Insulin resistance", Grade.WRONG),  # "insulin" inside a longer wrong option is not the gold
        # a wrong option named beside the gold: their rubric's 0 ("not including wrong options")
        ("A or B", Grade.WRONG),
        ("(A)/(B)", Grade.WRONG),
        ("Options A, B and D", Grade.WRONG),
        ("insulin or glucagon", Grade.WRONG),
        ("B. Insulin or D. Cortisol", Grade.WRONG),
        ("A or D", Grade.WRONG),
        # no option named exactly, the gold text inside a longer answer (and nothing else): consistent
        ("I would give insulin", Grade.CONSISTENT),
        ("The answer is unclear", Grade.WRONG),
        ("", Grade.WRONG),
        ("Beta cells", Grade.WRONG),  # a leading capital B followed by a letter is not "B"
    ],
)
def test_rule_grade_with_letters_shown(answer, grade):
    assert rule_grade(answer, MC, letters_shown=True) == grade


@pytest.mark.parametrize(
    "answer, grade",
    [
        ("Insulin", Grade.SAME),
        ("insulin.", Grade.SAME),
        ("B", Grade.WRONG),  # no letters were shown: a letter names nothing
        ("A hormone called insulin", Grade.CONSISTENT),  # a leading "A" is an article here, not option A
        ("A", Grade.WRONG),
        ("Glucagon", Grade.WRONG),
        ("Insulin, or glucagon", Grade.WRONG),
        ("Insulin resistance", Grade.WRONG),
    ],
)
def test_rule_grade_in_the_open_form_reads_option_texts_only(answer, grade):
    assert rule_grade(answer, MC, letters_shown=False) == grade


@pytest.mark.parametrize(
    "answer, grade",
    [
        ("Fabry disease", Grade.SAME),
        ("fabry  disease.", Grade.SAME),
        ("Fabry", Grade.CONSISTENT),  # the answer inside the gold (a subset)
        ("Classic Fabry disease (alpha-galactosidase A deficiency)", Grade.CONSISTENT),  # the gold inside the answer
        ("Fab", Grade.WRONG),  # containment is by whole words
        ("Gaucher disease", Grade.WRONG),
        ("", Grade.WRONG),
        ("the", Grade.WRONG),  # empty after normalisation
    ],
)
def test_rule_grade_open_ended(answer, grade):
    assert rule_grade(answer, OPEN) == grade
