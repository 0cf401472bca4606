"""Answer extraction: MIRAGE's letter extraction (for comparable benchmark numbers), the
Med-R3 `<answer>...</answer>` block, and matching a free answer to an option.

    mirage_answer('{"step_by_step_thinking": "...", "answer_choice": "B. Insulin"}')  -> "B"
    tagged_answer("<think>...</think><answer> B. Insulin </answer>")                   -> "B. Insulin"
    option_letter("insulin", {"A": "Glucagon", "B": "Insulin"})                        -> "B"
"""

from __future__ import annotations

import re
import string
from typing import Mapping

# MIRAGE src/utils.py::locate_answer, in its order; the first pattern that matches wins.
_MIRAGE_PATTERNS = tuple(
    re.compile(p.replace("X", "(A|B|C|D)"))
    for p in (
        r"^\s*X$",
        r"^\s*X or",
        r"^\s*X and",
        r"^\s*X/",
        r"^\s*X,",
        r"[Oo]ption X",
        r":\s*X",
        r"^\s*X\.",
        r'^\s*X"',
        r"^\s*X:",
    )
)
_MIRAGE_MARKER = '"answer_choice": "'
MIRAGE_FALLBACK = "A"  # what MIRAGE scores when nothing matches (it counts as answering A)


def mirage_answer(output: str) -> str:
    """The letter MIRAGE's evaluate.py reads from a model output: the text after the last
    `"answer_choice": "`, stripped, then the first matching pattern; "A" when none matches
    (MIRAGE's own fallback, kept so that accuracies are comparable)."""
    tail = output.split(_MIRAGE_MARKER)[-1].strip()
    for pattern in _MIRAGE_PATTERNS:
        found = pattern.findall(tail)
        if found:
            return found[0]
    return MIRAGE_FALLBACK


_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def tagged_answer(text: str) -> str | None:
    """The content of the last complete `<answer>...</answer>` block, stripped; None if none."""
    blocks = _ANSWER_BLOCK.findall(text)
    return blocks[-1].strip() if blocks else None


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD-style), for matching."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def option_letter(answer: str, options: Mapping[str, str]) -> str | None:
    """The option a free answer names: a leading letter ("B", "B.", "(B)", "B) x", "Option B")
    or an option text equal, after normalisation, to the answer or to the answer with a
    leading letter removed. None when it names no option or several."""
    letters = "".join(options)
    if not letters:
        return None
    lead = re.match(rf"^\s*(?:[Oo]ption\s+)?\(?([{letters}])(?:\)|\.|:|,|\s|$)", answer)
    if lead:
        return lead.group(1)
    norm = normalize_answer(answer)
    hits = [k for k, v in options.items() if normalize_answer(v) == norm]
    return hits[0] if len(hits) == 1 else None
