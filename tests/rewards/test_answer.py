"""Answer rubric (0/1/2 -> 1.0/0.4/0.1) against hand-graded answers."""

import pytest

from medr3_jax.data.records import QARecord
from medr3_jax.rewards.answer import GRADE_REWARD, Grade, answer_reward, rule_grade

MC = QARecord(
    id="q1",
    dataset="medqa",
    question="Which hormone lowers blood glucose?",
    options={"A": "Glucagon", "B": "Insulin", "C": "Insulin resistance", "D": "Cortisol"},
    answer="B",
    answer_text="Insulin",
)
OPEN = QARecord(id="q2", dataset="rarearena", question="Diagnosis?", answer_text="Fabry disease")


def test_grade_reward_table():
    assert [int(g) for g in Grade] == [0, 1, 2]
    assert GRADE_REWARD == {Grade.CORRECT: 1.0, Grade.PARTIAL: 0.4, Grade.WRONG: 0.1}


@pytest.mark.parametrize(
    "answer, grade",
    [
        ("B", Grade.CORRECT),
        ("B. Insulin", Grade.CORRECT),
        ("(B)", Grade.CORRECT),
        ("Option B", Grade.CORRECT),
        ("insulin", Grade.CORRECT),  # the option text names the option
        ("The insulin.", Grade.CORRECT),  # normalised: articles and punctuation go
        ("A", Grade.WRONG),
        ("D. Cortisol", Grade.WRONG),
        ("Insulin resistance", Grade.WRONG),  # "insulin" inside a longer wrong option is not the gold
        ("C", Grade.WRONG),
        # hedging: several options named, the gold among them
        ("A or B", Grade.PARTIAL),  # option_letter alone would read "A"
        ("B or D", Grade.PARTIAL),  # ... or "B": hedging is checked first
        ("(A)/(B)", Grade.PARTIAL),
        ("Options A, B and D", Grade.PARTIAL),
        ("B, or D", Grade.PARTIAL),
        ("insulin or glucagon", Grade.PARTIAL),
        ("B. Insulin or D. Cortisol", Grade.PARTIAL),
        ("D. Cortisol, though insulin is possible", Grade.PARTIAL),
        ("A or D", Grade.WRONG),  # several, gold not among them
        ("glucagon and cortisol", Grade.WRONG),
        # no option named exactly, the gold text mentioned (and nothing else): partial
        ("I would give insulin", Grade.PARTIAL),
        # nothing matches
        ("The answer is unclear", Grade.WRONG),
        ("", Grade.WRONG),
        ("Beta cells", Grade.WRONG),  # a leading capital B followed by a letter is not "B"
    ],
)
def test_rule_grade_multiple_choice(answer, grade):
    assert rule_grade(answer, MC) == grade


@pytest.mark.parametrize(
    "answer, grade",
    [
        ("Fabry disease", Grade.CORRECT),
        ("fabry  disease.", Grade.CORRECT),
        ("Fabry", Grade.PARTIAL),  # the answer inside the gold
        ("Classic Fabry disease (alpha-galactosidase A deficiency)", Grade.PARTIAL),  # the gold inside the answer
        ("Fab", Grade.WRONG),  # containment is by whole words
        ("Gaucher disease", Grade.WRONG),
        ("", Grade.WRONG),
        ("the", Grade.WRONG),  # empty after normalisation
    ],
)
def test_rule_grade_open_ended(answer, grade):
    assert rule_grade(answer, OPEN) == grade


@pytest.mark.parametrize(
    "text, judge, expected",
    [
        ("<think>x</think><answer>B. Insulin</answer>", None, (1.0, "rules")),
        ("<think>x</think><answer>A or B</answer>", None, (0.4, "rules")),
        ("<think>x</think><answer>A</answer>", None, (0.1, "rules")),
        ("<think>x</think><answer></answer>", None, (0.1, "rules")),  # an empty answer is graded: wrong
        ("<think>x</think><answer>A</answer><answer>B</answer>", None, (1.0, "rules")),  # the last block
        ("<think>x</think>", None, (0.0, "no_answer")),
        ("<think>x</think><answer>B", None, (0.0, "no_answer")),  # unclosed
        ("<think>x</think><answer>A</answer>", 0, (1.0, "judge")),  # the judge overrides the rules
        ("<think>x</think><answer>B</answer>", 1, (0.4, "judge")),
        ("<think>x</think><answer>B</answer>", Grade.WRONG, (0.1, "judge")),
        ("<think>x</think>", 0, (0.0, "no_answer")),  # no answer is never graded
    ],
)
def test_answer_reward(text, judge, expected):
    assert answer_reward(text, MC, judge_grade=judge) == expected


def test_answer_reward_open_ended():
    assert answer_reward("<answer>Fabry disease</answer>", OPEN) == (1.0, "rules")
    assert answer_reward("<answer>Fabry</answer>", OPEN) == (0.4, "rules")


@pytest.mark.parametrize("bad", [3, -1, True, 0.5])
def test_answer_reward_rejects_a_bad_judge_grade(bad):
    with pytest.raises(ValueError, match="judge_grade"):
        answer_reward("<answer>B</answer>", MC, judge_grade=bad)
