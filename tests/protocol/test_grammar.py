"""The two protocols' format grammars: search_r1 against hand-read cases, med_r3 against our
port of the authors' `score_think_pattern` / `get_think_and_answer` (tests/authors_reference.py,
from `my_reward/auxiliary/format_reward.py` in GitHub 8023looker/Med-R3)."""

import pytest

from medr3_jax.protocol import MED_R3, SEARCH_R1, clean_search_blocks, med_r3_format, med_r3_think_and_answer
from medr3_jax.protocol.grammar import search_r1_format as search_format
from medr3_jax.protocol.grammar import search_r1_think_and_answer as think_and_answer
from medr3_jax.protocol.grammar import strict_format
from tests import authors_reference as ref

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


# ---- med_r3: the authors' grammar (responses as the policy writes them after the prompt's <think>)
SEARCH_IN_THINK = (
    "Chest pain, diaphoresis.<search> STEMI criteria </search><document>ST elevation in two leads.</document>"
    "<document>New LBBB.</document>So it is STEMI.</think><answer>STEMI</answer>"
)
MED_R3_CASES = [
    # (response after the prompt's "<think>", expected format)
    ("Insulin lowers glucose.</think><answer>Insulin</answer>", 1.0),
    ("x</think>\n  <answer> Insulin </answer>\n", 1.0),  # whitespace around the answer block
    ("x</think><answer>Insulin</answer><|im_end|>", 1.0),  # end-of-text strings removed first
    ("x</think><answer>Insulin</answer></s>  ", 1.0),
    (SEARCH_IN_THINK, 1.0),  # searching inside the single think block
    ("a<search>q</search>b</think><answer>B</answer>", 1.0),  # a search without documents is still format
    ("</think><answer>B</answer>", 1.0),  # an empty think passes their check
    ("x</think><answer>B</answer> trailing", 0.0),  # text after </answer>
    ("x</think><answer>B</answer><answer>C</answer>", 0.0),  # two answers
    ("x</think><answer>  </answer>", 0.0),  # empty answer
    ("x</think>", 0.0),  # no answer
    ("x</think>B", 0.0),  # an answer without tags (the prompt asks for <answer>)
    ("x<answer>B</answer></think><answer>B</answer>", 0.0),  # answer tag inside the think
    ("x", 0.0),  # no </think>
    ("<think>x</think><answer>B</answer>", 0.0),  # a second <think>
    ("x</think></think><answer>B</answer>", 0.0),  # a second </think>
    ("a</think><search>q</search><document>d</document><think>b</think><answer>B</answer>", 0.0),  # search_r1 rounds
    ("", 0.0),
]


@pytest.mark.parametrize("response, expected", MED_R3_CASES)
def test_med_r3_format_equals_the_authors_score_think_pattern(response, expected):
    ours = med_r3_format("<think>" + response)
    assert ours == expected
    assert ours == ref.score_think_pattern(response, think_in_prompt=True)
    assert MED_R3.format_score("<think>" + response, retrieval=True) == ours
    assert MED_R3.format_score("<think>" + response, retrieval=False) == ours  # one grammar for every stage


def test_med_r3_format_implements_the_intent_of_their_between_tags_check():
    """Their check for text between </think> and <answer> slices the whole text with an index
    into the answer part: it fires only when the think block is short next to that text."""
    junk = "so the answer, all things considered, is: "
    short, long = f"x</think>{junk}<answer>B</answer>", "x" * 80 + f"</think>{junk}<answer>B</answer>"
    assert ref.score_think_pattern(short, think_in_prompt=True) == 0.0
    assert ref.score_think_pattern(long, think_in_prompt=True) == 1.0  # the defect: text before <answer> passes
    assert med_r3_format("<think>" + short) == med_r3_format("<think>" + long) == 0.0


THINK_ANSWER_CASES = [
    SEARCH_IN_THINK,
    "plain</think><answer> B. Insulin </answer>",
    "no close at all <answer>B</answer>",
    "a<search>q</search><document>d</document>b</think>c<answer>A</answer>d<answer>B</answer>e",
    "a</search>b<search>c</search>d</think><answer>x<document>y</document></answer>",  # a closer before its opener
    "only think</think>",
    "",
]


@pytest.mark.parametrize("response", THINK_ANSWER_CASES)
def test_med_r3_think_and_answer_equals_the_authors_get_think_and_answer(response):
    assert med_r3_think_and_answer("<think>" + response) == ref.get_think_and_answer(response)
    assert MED_R3.think_and_answer("<think>" + response) == ref.get_think_and_answer(response)


def test_med_r3_think_and_answer_by_hand():
    assert med_r3_think_and_answer("<think>" + SEARCH_IN_THINK) == ("Chest pain, diaphoresis.So it is STEMI.", "STEMI")
    assert clean_search_blocks(" a<search>q</search>b<document>d</document>c ") == "abc"


def test_search_r1_protocol_uses_the_round_grammar_with_retrieval_and_the_strict_one_without():
    rounds = f"<think>look up</think>{ROUND}<think>so B</think><answer>B</answer>"
    assert SEARCH_R1.format_score(rounds, retrieval=True) == 1.0
    assert SEARCH_R1.format_score(rounds, retrieval=False) == 0.0
    assert SEARCH_R1.format_score(GOOD, retrieval=False) == 1.0
    # A trajectory valid under one grammar fails the other.
    assert MED_R3.format_score(rounds, retrieval=True) == 0.0
    assert SEARCH_R1.format_score("<think>" + SEARCH_IN_THINK, retrieval=True) == 0.0
