"""Answer reward: the authors' rubric. A grade 2 (same meaning as the gold, no wrong option),
1 (consistent with the gold: a synonym, superset or subset, no wrong option) or 0 (anything
else, naming a wrong option included) becomes 1.0 / 0.4 / 0.1
(`RewardActorMedReasoningLogical.normalize_reward` in `contrib/med_reasoning_logical.py`,
GitHub 8023looker/Med-R3; the judge's prompt is `rewards/judge.py` `answer_prompt`).

    record = QARecord(id="1", dataset="medqa", question="...", options={"A": "Glucagon",
                      "B": "Insulin"}, answer="B", answer_text="Insulin")
    rule_grade("B. Insulin", record)            -> Grade.SAME       (reward 1.0)
    rule_grade("insulin therapy", record)       -> Grade.CONSISTENT (0.4)
    rule_grade("A or B", record)                -> Grade.WRONG      (0.1: a wrong option is named)
    grade_reward(2) -> 1.0;  grade_reward(1) -> 0.4;  grade_reward(0) -> 0.1

The grade comes from the judge when the run has one, else (and where the judge failed) from
`rule_grade`, which knows only string matching: a correct answer gets the top grade and a
wrong one the bottom grade.
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Mapping

from medr3_jax.data.answers import normalize_answer, option_letter
from medr3_jax.data.records import QARecord


class Grade(IntEnum):
    """The authors' rubric numbers: 2 same meaning, 1 consistent, 0 wrong."""

    WRONG = 0
    CONSISTENT = 1
    SAME = 2


BOTTOM_REWARD = 0.1  # `RewardActorBaseWithApi.default`: also the reward of a gated or unjudged row


def grade_reward(score: float) -> float:
    """A judge score as the reward: >= 2 -> 1.0, >= 1 -> 0.4, else 0.1 (their thresholds, so
    a score of 3 counts as 2 and a negative one as 0)."""
    return 1.0 if score >= 2.0 else 0.4 if score >= 1.0 else BOTTOM_REWARD


_SEPARATOR = r"\s*(?:,\s*(?:or\b|and\b)?|/|&|\bor\b|\band\b)\s*"  # ", "  "/"  " or "  ", and "


def _letter_list(answer: str, letters: str) -> set[str]:
    """Letters of a leading list of two or more letters: "A or C", "(A)/(C)", "Options A, C and D"."""
    one = rf"\(?[{letters}]\)?"
    found = re.match(
        rf"^\s*(?:[Oo]ptions?\s+)?({one}(?:{_SEPARATOR}{one})+)(?![A-Za-z0-9])",
        answer,
    )
    return set(re.findall(f"[{letters}]", found.group(1))) if found else set()


def _words_in(needle: str, haystack: str) -> list[tuple[int, int]]:
    """Spans where `needle` occurs in `haystack` as whole words (both normalised)."""
    if not needle:
        return []
    return [m.span() for m in re.finditer(rf"(?<!\S){re.escape(needle)}(?!\S)", haystack)]


def _texts_named(answer: str, options: Mapping[str, str]) -> set[str]:
    """Options whose normalised text occurs as whole words in the normalised answer, leaving
    out occurrences inside a longer occurring option ("insulin" within "insulin resistance")."""
    norm = normalize_answer(answer)
    spans = {k: _words_in(normalize_answer(v), norm) for k, v in options.items()}
    inside = lambda a, b: b[0] <= a[0] and a[1] <= b[1] and a != b  # noqa: E731
    named = set()
    for k, own in spans.items():
        others = [s for j, ss in spans.items() if j != k for s in ss]
        if any(not any(inside(s, o) for o in others) for s in own):
            named.add(k)
    return named


def _grade_choice(answer: str, record: QARecord, letters_shown: bool) -> Grade:
    letters = "".join(record.options)
    if letters_shown:
        letter = option_letter(answer, record.options)
        named = _letter_list(answer, letters) | _texts_named(answer, record.options)
    else:  # open form: the policy never saw letters, so only option texts name options
        norm = normalize_answer(answer)
        exact = [k for k, v in record.options.items() if normalize_answer(v) == norm]
        letter = exact[0] if len(exact) == 1 else None
        named = _texts_named(answer, record.options)
    if letter is not None:
        named.add(letter)
    if len(named) > 1:  # a wrong option named beside the gold (hedging) is wrong in their rubric
        return Grade.WRONG
    if letter is not None:
        return Grade.SAME if letter == record.answer else Grade.WRONG
    # No option named exactly: the gold text inside a longer answer (and no other option) is consistent.
    return Grade.CONSISTENT if named == {record.answer} else Grade.WRONG


def _grade_open(answer: str, record: QARecord) -> Grade:
    norm, gold = normalize_answer(answer), normalize_answer(record.answer_text)
    if not norm or not gold:
        return Grade.WRONG
    if norm == gold:
        return Grade.SAME
    if _words_in(gold, norm) or _words_in(norm, gold):
        return Grade.CONSISTENT
    return Grade.WRONG


def rule_grade(answer: str, record: QARecord, *, letters_shown: bool = True) -> Grade:
    """Grade an extracted answer without a judge (the rubric's top grade for a correct answer,
    its bottom grade for a wrong one).

    Multiple choice. The options the answer *names*: with letters shown ("choices" form), the
    option `option_letter` reads (leading letter or exact option text) and every letter of a
    leading letter list ("A or C", "A/C"); in both forms every option whose normalised text
    occurs as whole words in the normalised answer (an occurrence inside a longer named option
    does not count). Two or more named -> WRONG (a wrong option is named). Exactly one option
    named exactly -> SAME if it is the gold, else WRONG. No option named exactly but the gold
    text mentioned, and no other option -> CONSISTENT ("insulin therapy" for "Insulin").
    Nothing named -> WRONG. Negation is not understood ("B, not C" names two); that is what
    the judge is for.

    Open-ended (no options). Normalised answer equal to the normalised `answer_text` -> SAME;
    one contains the other as whole words (both non-empty) -> CONSISTENT; else WRONG.
    """
    if record.is_multiple_choice:
        return _grade_choice(answer, record, letters_shown)
    return _grade_open(answer, record)
