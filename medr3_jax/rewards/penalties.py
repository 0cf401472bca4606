"""Reward penalties (all values <= 0), by the authors' formulas (`contrib/base_with_api.py`
`RewardActorBaseWithApi.add_penalty` and `auxiliary/language_reward.py` in GitHub
8023looker/Med-R3; the overlong term is DAPO's, as their `reward_manager/diagnosis_with_search.py`
adds it). Pure functions of text and lengths.

    think, answer = protocol.think_and_answer(text)          # search/document blocks removed
    format_penalty(protocol.format_score(text, ...))         -> 0.0 or -0.1
    think_length_penalty(think, answer)                      -> in [-0.1, 0]
    language_penalties(question, think, answer)              -> in [-0.2, 0]
    overlong_penalty(n_response_tokens, 2048, 439)           -> in [-1, 0]
    bad_search_penalty(flagged)                              -> 0.0 or -0.1
"""

from __future__ import annotations

import math
import re


def _penalty(x: float) -> float:
    """-x, with 0.0 rather than -0.0 (tidier in logs)."""
    return -x if x else 0.0


def format_penalty(f: float) -> float:
    """-0.1 * (1 - F) for a format score F in [0, 1]."""
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"format score must be in [0, 1], got {f}")
    return _penalty(0.1 * (1.0 - f))


_E2 = 1.0 - math.exp(-2.0)  # their 0.8646647167


def think_length_penalty(think: str, answer: str) -> float:
    """-(1 - s) / 10 with s = (1 - exp(-min(|T|/|A|, 2))) / (1 - exp(-2)), |T| and |A| the
    character lengths of the think text and the answer (search and document blocks already
    removed), and s = 0 for an empty answer. Thinking at least twice as long as the answer
    costs nothing; no thinking, or no answer, costs 0.1."""
    if not answer:
        return _penalty(0.1)
    s = (1.0 - math.exp(-min(len(think) / len(answer), 2.0))) / _E2
    return _penalty((1.0 - s) / 10.0)


_HAN = re.compile("[\u4e00-\u9fa5]")  # their `zh_pattern`: CJK unified ideographs (basic block)


def has_chinese(text: str) -> bool:
    """Whether the text holds a Chinese character (the authors' only language test)."""
    return _HAN.search(text) is not None


def language_penalty(question: str, text: str, chunk: int = 200) -> float:
    """-(1 - c) / 10, c = share of the consecutive `chunk`-character pieces of `text` whose
    has-Chinese flag equals the question's (`score_language_consistency`); c = 0 for an empty
    text, so saying nothing costs the full 0.1."""
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    pieces = [has_chinese(text[i : i + chunk]) for i in range(0, len(text), chunk)]
    if not pieces:
        return _penalty(0.1)
    want = has_chinese(question)
    return _penalty((1.0 - pieces.count(want) / len(pieces)) / 10.0)


def language_penalties(question: str, think: str, answer: str, chunk: int = 200) -> float:
    """The language consistency penalty of the think text plus that of the answer."""
    return language_penalty(question, think, chunk) + language_penalty(question, answer, chunk)


OVERLONG_BUFFER_SHARE = 3072 / 14336  # the authors' overlong buffer of their response cap


def overlong_buffer(max_length: int) -> int:
    """The default buffer for a response cap: the authors' 3072 of 14336 tokens, scaled."""
    return max(1, round(max_length * OVERLONG_BUFFER_SHARE))


def overlong_penalty(length: int, max_length: int, buffer: int) -> float:
    """DAPO's soft overlong punishment for a response of `length` tokens (sampled and inserted):
    min(-(length - (max_length - buffer)) / buffer, 0), bounded below by -1 (the authors' term
    has no bound; their rollout truncates at max_length, where it reaches -1)."""
    if not 0 < buffer <= max_length:
        raise ValueError(f"need 0 < buffer <= max_length, got buffer={buffer}, max_length={max_length}")
    return _penalty(min(max(length - (max_length - buffer), 0) / buffer, 1.0))


BAD_SEARCH_REWARD = -0.1  # `DiagnosisWithSearchRewardManager`: the reward of a `search_bad_format` row


def bad_search_penalty(flagged: bool) -> float:
    """-0.1 for a row the rollout flagged (it wrote `<document>` itself, or a search turn
    without exactly one `<search>` or with an empty query), else 0."""
    return BAD_SEARCH_REWARD if flagged else 0.0
