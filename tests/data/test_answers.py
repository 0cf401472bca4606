"""Answer extraction against hand-worked cases (MIRAGE's rules as DATA_FORMATS.md records them)."""

import pytest

from medr3_jax.data.answers import mirage_answer, normalize_answer, option_letter, tagged_answer


@pytest.mark.parametrize(
    "output, letter",
    [
        ('{"step_by_step_thinking": "...", "answer_choice": "C"}', "C"),
        ('{"step_by_step_thinking": "A is wrong", "answer_choice": "B. Insulin"}', "B"),  # ^X\.
        ('"answer_choice": "A", then "answer_choice": "D or B"', "D"),  # the last marker counts
        ('"answer_choice": "Option C is correct"', "C"),
        ('"answer_choice": "The answer: D"', "D"),  # :\s*X
        ('"answer_choice": "B/C"', "B"),
        ('"answer_choice": "b"', "A"),  # no lower case: MIRAGE falls back to A
        ("I think the answer is E", "A"),  # no E either
        ("Final: C", "C"),  # no marker: the whole text is searched
    ],
)
def test_mirage_answer(output, letter):
    assert mirage_answer(output) == letter


def test_tagged_answer_takes_the_last_complete_block():
    text = "<think>maybe <answer>A</answer>?</think> <answer> B. Insulin </answer> <answer>unfinished"
    assert tagged_answer(text) == "B. Insulin"
    assert tagged_answer("<think>no answer</think>") is None
    assert tagged_answer("<answer>\nline one\nline two\n</answer>") == "line one\nline two"


def test_normalize_answer():
    assert normalize_answer("  The Beta-Cells, of an Islet! ") == "betacells of islet"


OPTIONS = {"A": "Glucagon", "B": "Insulin", "C": "The somatostatin", "D": "Insulin-like growth factor 1"}


@pytest.mark.parametrize(
    "answer, letter",
    [
        ("B", "B"),
        ("B. Insulin", "B"),
        ("(C)", "C"),
        ("D) IGF-1", "D"),
        ("Option A", "A"),
        ("insulin", "B"),
        ("somatostatin.", "C"),  # articles and punctuation do not matter
        ("Insulin-like growth factor 1", "D"),
        ("Both insulin and glucagon", None),
        ("E", None),
        ("Beta cells", None),  # "B" followed by more letters is not a letter answer
    ],
)
def test_option_letter(answer, letter):
    assert option_letter(answer, OPTIONS) == letter
