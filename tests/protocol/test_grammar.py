"""Format rewards against hand-read protocol cases."""

import pytest

from medr3_jax.rewards.format import search_format, strict_format, think_and_answer

GOOD = "<think>Insulin lowers glucose.</think>\n<answer>B. Insulin</answer>"
DOCS = "\n<document>Insulin lowers glucose.</document><document></document>\n"  # empty documents are fine
ROUND = "<search>insulin action</search>" + DOCS


@pytest.mark.parametrize(
    "text, strict, search",
    [
        (GOOD, 1.0, 1.0),
        (GOOD + "  \n\n", 1.0, 1.0),  # trailing whitespace
        ("<think>x</think><answer>B</answer>", 1.0, 1.0),  # no whitespace between
        ("<think>\n x \n</think>\n\n \t<answer>\nB\n</answer>\n", 1.0, 1.0),  # whitespace variants
        ("<think>x</think> <answer>B</answer> done", 0.0, 0.0),  # text after </answer>
        ("<think>x</think><answer>B</answer><answer>C</answer>", 0.0, 0.0),  # two answers
        ("<think>x</think><answer>  </answer>", 0.0, 0.0),  # empty answer
        ("<think> \n</think><answer>B</answer>", 0.0, 0.0),  # empty think
        ("<think>x<answer>B</answer>", 0.0, 0.0),  # missing </think>
        ("<think>x</think><answer>B", 0.0, 0.0),  # missing </answer>
        ("<think>x <answer>B</answer></think>", 0.0, 0.0),  # answer inside think
        ("<think>x <answer>B</answer></think><answer>B</answer>", 0.0, 0.0),
        ("<think>a <think>b</think> c</think><answer>B</answer>", 0.0, 0.0),  # nested think
        ("<think>x</think><answer>B <think>y</think></answer>", 0.0, 0.0),  # tag inside answer
        ("<think>x</think>so<answer>B</answer>", 0.0, 0.0),  # text between blocks
        ("<think>x</think></think><answer>B</answer>", 0.0, 0.0),  # stray closing tag
        ("<answer>B</answer>", 0.0, 0.0),  # no think
        ("<think>x</think>", 0.0, 0.0),  # no answer
        ("", 0.0, 0.0),
        # retrieval rounds
        (f"<think>look up</think>{ROUND}<think>so B</think><answer>B</answer>", 0.0, 1.0),
        (f"<think>a</think>{ROUND}<think>b</think>{ROUND}<think>c</think>\n<answer>B</answer> ", 0.0, 1.0),
        ("<think>a</think><search>q</search><think>b</think><answer>B</answer>", 0.0, 0.0),  # no documents
        ("<think>a</think><document>d</document><think>b</think><answer>B</answer>", 0.0, 0.0),  # no search
        (f"<think>a</think>{ROUND}<answer>B</answer>", 0.0, 0.0),  # no think after the documents
        ("<think>a</think><search>q</search><answer>B</answer>", 0.0, 0.0),  # search right before answer
        (f"<think>a</think><search> </search>{DOCS}<think>b</think><answer>B</answer>", 0.0, 0.0),  # empty query
        (
            "<think>a</think><search>q</search><search>r</search><document>d</document><think>b</think><answer>B</answer>",
            0.0,
            0.0,
        ),
        (
            "<think>a</think><search>q <think></search><document>d</document><think>b</think><answer>B</answer>",
            0.0,
            0.0,
        ),
        # documents hold any text but a nested document
        (
            "<think>a</think><search>q</search><document>see <answer>x</answer></document><think>b</think><answer>B</answer>",
            0.0,
            1.0,
        ),
        (
            "<think>a</think><search>q</search><document>x <document>y</document></document><think>b</think><answer>B</answer>",
            0.0,
            0.0,
        ),
        ("<think>a</think><search>q</search><document>never closed<think>b</think><answer>B</answer>", 0.0, 0.0),
    ],
)
def test_formats(text, strict, search):
    assert strict_format(text) == strict
    assert search_format(text) == search


def test_think_and_answer():
    text = f"<think> first </think>{ROUND}<think>second</think><answer> B </answer>"
    assert think_and_answer(text) == ("first\nsecond", "B")
    assert think_and_answer("<think>only</think>") == ("only", "")
    # lenient on malformed text: complete blocks only, last answer, documents never count
    assert think_and_answer("<think>a <answer>A</answer></think><answer>C</answer><think>cut") == (
        "a <answer>A</answer>",
        "C",
    )
    assert think_and_answer("<think>a</think><document><think>retrieved</think></document>") == ("a", "")
    assert think_and_answer("") == ("", "")
