"""Answer reward: the paper's 0/1/2 rubric against the gold and the wrong options, mapped
0 -> 1.0, 1 -> 0.4, 2 -> 0.1; no `<answer>` block at all earns 0.0 (not graded).

    record = QARecord(id="1", dataset="medqa", question="...", options={"A": "Glucagon",
                      "B": "Insulin"}, answer="B", answer_text="Insulin")
    answer_reward("<think>...</think><answer>B. Insulin</answer>", record)          -> (1.0, "rules")
    answer_reward("<think>...</think><answer>A or B</answer>", record)              -> (0.4, "rules")
    answer_reward("<think>...</think><answer>B</answer>", record, judge_grade=2)    -> (0.1, "judge")

The grade comes from the judge LLM when the caller has one (`judge_grade`), else from
`rule_grade`; the judge module returns None when it fails, and the caller then passes None so
that the rules are the fallback.
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Mapping

from medr3_jax.data.answers import normalize_answer, option_letter, tagged_answer
from medr3_jax.data.records import QARecord


class Grade(IntEnum):
    """The paper's rubric: 0 correct, 1 partially correct (e.g. hedging), 2 wrong."""

    CORRECT = 0
    PARTIAL = 1
    WRONG = 2


GRADE_REWARD: dict[Grade, float] = {Grade.CORRECT: 1.0, Grade.PARTIAL: 0.4, Grade.WRONG: 0.1}
NO_ANSWER_REWARD = 0.0


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


def _grade_choice(answer: str, record: QARecord) -> Grade:
    letters = "".join(record.options)
    letter = option_letter(answer, record.options)
    named = _letter_list(answer, letters) | _texts_named(answer, record.options)
    if letter is not None:
        named.add(letter)
    if len(named) > 1:  # hedging: checked first, so that "A or C" is not read as "A"
        return Grade.PARTIAL if record.answer in named else Grade.WRONG
    if letter is not None:
        return Grade.CORRECT if letter == record.answer else Grade.WRONG
    # No option named exactly: mentioning the gold text (and no other option) is partial.
    return Grade.PARTIAL if named == {record.answer} else Grade.WRONG


def _grade_open(answer: str, record: QARecord) -> Grade:
    norm, gold = normalize_answer(answer), normalize_answer(record.answer_text)
    if not norm or not gold:
        return Grade.WRONG
    if norm == gold:
        return Grade.CORRECT
    if _words_in(gold, norm) or _words_in(norm, gold):
        return Grade.PARTIAL
    return Grade.WRONG


def rule_grade(answer: str, record: QARecord) -> Grade:
    """Grade an extracted answer without a judge.

    Multiple choice. The options the answer *names* are: the option `option_letter` reads
    (leading letter or exact option text), every letter of a leading letter list ("A or C",
    "A/C", "A, C and D"), and every option whose normalised text occurs as whole words in
    the normalised answer (an occurrence inside a longer named option does not count). Then:
    two or more named -> PARTIAL if the gold is among them (hedging), else WRONG; this comes
    first, so "A or C" is partial even though `option_letter` alone reads "A".
    Exactly one option read by `option_letter` -> CORRECT if it is the gold, else WRONG.
    No option read but the gold text mentioned (and no other option) -> PARTIAL
    ("insulin therapy" for "Insulin"). Nothing named -> WRONG. Negation is not understood
    ("B, not C" hedges); that is what the judge is for.

    Open-ended (no options). Normalised answer equal to the normalised `answer_text` ->
    CORRECT; one contains the other as whole words (both non-empty) -> PARTIAL; else WRONG.
    """
    if record.is_multiple_choice:
        return _grade_choice(answer, record)
    return _grade_open(answer, record)


def answer_reward(text: str, record: QARecord, judge_grade: int | None = None) -> tuple[float, str]:
    """(reward, source) for a trajectory text: the last `<answer>` block is graded by
    `judge_grade` when given (source "judge"), else by `rule_grade` (source "rules"), and
    mapped through `GRADE_REWARD`; (0.0, "no_answer") when the text has no complete answer block."""
    answer = tagged_answer(text)
    if answer is None:
        return NO_ANSWER_REWARD, "no_answer"
    if judge_grade is not None:
        if isinstance(judge_grade, bool) or judge_grade not in tuple(Grade):
            raise ValueError(f"judge_grade must be 0, 1 or 2, got {judge_grade!r}")
        return GRADE_REWARD[Grade(judge_grade)], "judge"
    return GRADE_REWARD[rule_grade(answer, record)], "rules"
