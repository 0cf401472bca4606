"""Reward penalties (all values <= 0): format, think length, language consistency, DAPO
overlong, bad search format. Pure functions of text and lengths.

    think, answer = think_and_answer(text)                   # from rewards.format
    format_penalty(strict_format(text))                      -> 0.0 or -0.1
    think_length_penalty(think, answer)                      -> in [-0.1, 0]
    language_penalties(question, think, answer)              -> in [-0.2, 0]
    overlong_penalty(n_response_tokens)                      -> in [-1, 0]
    bad_search_penalty(row_wrote_document)                   -> 0.0 or -0.1
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


_E2 = 1.0 - math.exp(-2.0)


def think_length_penalty(think: str, answer: str) -> float:
    """-(1 - s) / 10 with s = (1 - exp(-min(|T|/|A|, 2))) / (1 - exp(-2)), where |T| and |A|
    are the whitespace word counts of the think text and the answer (|A| at least 1). Thinking
    at least twice as long as the answer costs nothing; no thinking at all (s = 0) costs 0.1."""
    t, a = len(think.split()), max(len(answer.split()), 1)
    s = (1.0 - math.exp(-min(t / a, 2.0))) / _E2 if t else 0.0
    return _penalty((1.0 - s) / 10.0)


# Han ideographs (with extension A, compatibility and the supplementary planes), Hiragana,
# Katakana (with phonetic extensions and half-width forms), Hangul syllables and jamo.
_CJK = re.compile(
    "[\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff\U00020000-\U0002fa1f"
    "\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f"
    "\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]"
)
CJK_SHARE = 0.3


def is_cjk(text: str) -> bool:
    """True when at least 30% of the non-whitespace characters are CJK (False for none)."""
    chars = "".join(text.split())
    return bool(chars) and len(_CJK.findall(chars)) >= CJK_SHARE * len(chars)


def language_penalty(question: str, text: str, chunk: int = 200) -> float:
    """-(1 - c) / 10, c = share of the consecutive `chunk`-character chunks of `text` whose
    CJK-ness equals the question's. Chunks of whitespace only are not counted; a text with
    nothing but whitespace costs nothing."""
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    chunks = [text[i : i + chunk] for i in range(0, len(text), chunk)]
    chunks = [c for c in chunks if c.strip()]
    if not chunks:
        return 0.0
    want = is_cjk(question)
    c = sum(is_cjk(piece) == want for piece in chunks) / len(chunks)
    return _penalty((1.0 - c) / 10.0)


def language_penalties(question: str, think: str, answer: str, chunk: int = 200) -> float:
    """The paper's language consistency penalty: think and answer each judged on its own, summed."""
    return language_penalty(question, think, chunk) + language_penalty(question, answer, chunk)


def overlong_penalty(length: int, max_length: int = 14336, buffer: int = 3072) -> float:
    """DAPO's soft overlong punishment for a response of `length` tokens: 0 up to
    max_length - buffer, then falling linearly to -1 at max_length, and -1 beyond."""
    if not 0 < buffer <= max_length:
        raise ValueError(f"need 0 < buffer <= max_length, got buffer={buffer}, max_length={max_length}")
    expected = max_length - buffer
    if length <= expected:
        return 0.0
    if length <= max_length:
        return (expected - length) / buffer
    return -1.0


BAD_SEARCH_PENALTY = -0.1


def bad_search_penalty(flagged: bool) -> float:
    """-0.1 for a row the rollout flagged: it wrote `<document>` itself, or an empty or double
    `<search>` (the authors' verl fork); else 0."""
    return BAD_SEARCH_PENALTY if flagged else 0.0
