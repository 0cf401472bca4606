"""Format grammars: is a trajectory well formed under a protocol, and what did the policy
think and answer? Pure functions of the assistant text: the prompt's trailing `<think>` plus
the response, inserted documents included.

    med_r3_format("<think>a<search>q</search><document>d</document>b</think><answer>X</answer>")  -> 1.0
    search_r1_format("<think>a</think><search>q</search><document>d</document>"
                     "<think>b</think><answer>X</answer>")                                       -> 1.0
    med_r3_think_and_answer("<think>a<search>q</search><document>d</document>b</think><answer>X</answer>")
                                                                                    -> ("ab", "X")

med_r3 is the authors' grammar (`my_reward/auxiliary/format_reward.py` in GitHub
8023looker/Med-R3): the policy searches *inside one* think block. search_r1 is Search-R1's:
close the think block, search, read documents, open a new think block.
"""

from __future__ import annotations

import re

from medr3_jax.protocol.tags import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    DOCUMENT_CLOSE,
    DOCUMENT_OPEN,
    END_OF_TEXT,
    SEARCH_CLOSE,
    SEARCH_OPEN,
    TAGS,
    THINK_CLOSE,
    THINK_OPEN,
)


# ---- med_r3: the authors' grammar ----------------------------------------------------------
def med_r3_format(text: str) -> float:
    """1.0 when `text` passes the authors' format check, else 0.0 (`score_think_pattern` with
    soft_score 0 and the prompt ending in `<think>`, as `RewardActorBaseWithApi` calls it).

    After removing end-of-text strings and stripping: exactly one `<think>` (at the start) and
    one `</think>`; no `<answer>`/`</answer>` before `</think>`; after `</think>` only
    whitespace, then exactly one `<answer>…</answer>` with non-empty content, then only
    whitespace. `<search>`/`<document>` blocks may appear anywhere inside the think block.
    Their check for text between `</think>` and `<answer>` slices the wrong string (an index
    into the answer part applied to the whole text, so it only fires for short think blocks);
    this implements its evident intent: nothing but whitespace between the two tags.
    """
    for marker in END_OF_TEXT:
        text = text.replace(marker, "")
    text = text.strip()
    think_end = text.rfind(THINK_CLOSE)
    if think_end < 0:
        return 0.0
    if ANSWER_OPEN in text[:think_end] or ANSWER_CLOSE in text[:think_end]:
        return 0.0
    after = text[think_end + len(THINK_CLOSE) :].strip()
    if not after.replace(ANSWER_OPEN, "").replace(ANSWER_CLOSE, "").strip():
        return 0.0
    if not text.startswith(THINK_OPEN) or text.count(THINK_OPEN) != 1 or text.count(THINK_CLOSE) != 1:
        return 0.0
    if after.count(ANSWER_OPEN) != 1 or after.count(ANSWER_CLOSE) != 1:
        return 0.0
    if after[after.rfind(ANSWER_CLOSE) + len(ANSWER_CLOSE) :].strip():
        return 0.0
    if after[: after.find(ANSWER_OPEN)].strip():
        return 0.0
    return 1.0


def _remove_pairs(text: str, opener: str, closer: str) -> str:
    """Removes `opener…closer` spans from the left while the first opener precedes the first closer."""
    while True:
        start, end = text.find(opener), text.find(closer)
        if start == -1 or end == -1 or start >= end:
            return text
        text = text[:start] + text[end + len(closer) :]


def clean_search_blocks(text: str) -> str:
    """The authors' `clean_search_pattern`: search blocks, then document blocks removed
    (each while the first opener precedes the first closer), then stray tags, then stripped."""
    text = _remove_pairs(text, SEARCH_OPEN, SEARCH_CLOSE)
    text = _remove_pairs(text, DOCUMENT_OPEN, DOCUMENT_CLOSE)
    for tag in (SEARCH_OPEN, SEARCH_CLOSE, DOCUMENT_OPEN, DOCUMENT_CLOSE):
        text = text.replace(tag, "")
    return text.strip()


def med_r3_think_and_answer(text: str) -> tuple[str, str]:
    """The authors' `get_think_and_answer` (clean_search=True): the think text is everything
    before the last `</think>` (without a leading `<think>`), the answer what follows it, cut
    after the first `<answer>` and before the last `</answer>`; both without search/document
    blocks, stripped. With no `</think>` the whole text is the answer."""
    if text.startswith(THINK_OPEN):
        text = text[len(THINK_OPEN) :]
    think, answer = "", text
    if THINK_CLOSE in text:
        cut = text.rfind(THINK_CLOSE)
        think, answer = text[:cut], text[cut + len(THINK_CLOSE) :]
    if ANSWER_OPEN in answer:
        answer = answer[answer.find(ANSWER_OPEN) + len(ANSWER_OPEN) :]
    if ANSWER_CLOSE in answer:
        answer = answer[: answer.rfind(ANSWER_CLOSE)]
    return clean_search_blocks(think), clean_search_blocks(answer)


# ---- search_r1: rounds of think -> search -> documents -> think ----------------------------
_BLOCKS = {THINK_OPEN: ("t", THINK_CLOSE), SEARCH_OPEN: ("s", SEARCH_CLOSE)}
_BLOCKS |= {DOCUMENT_OPEN: ("d", DOCUMENT_CLOSE), ANSWER_OPEN: ("a", ANSWER_CLOSE)}
_WHITESPACE = re.compile(r"\s*")
_STRICT = re.compile(r"ta")
_SEARCH = re.compile(r"t(?:sd+t)*a")


def _blocks(text: str) -> list[tuple[str, str]] | None:
    """The text as [(kind, content)] with kind in "tsda" (think/search/document/answer), or
    None when it is not a whitespace-separated sequence of well-formed blocks."""
    blocks, pos = [], 0
    while True:
        pos = _WHITESPACE.match(text, pos).end()
        if pos == len(text):
            return blocks
        opener = next((tag for tag in _BLOCKS if text.startswith(tag, pos)), None)
        if opener is None:
            return None  # text outside a block, or a closing tag without its opener
        kind, closer = _BLOCKS[opener]
        start = pos + len(opener)
        end = text.find(closer, start)
        if end < 0:
            return None  # unclosed
        content = text[start:end]
        # Documents are retrieved text inserted by the system: any text but a nested document.
        forbidden = (DOCUMENT_OPEN,) if kind == "d" else TAGS
        if any(tag in content for tag in forbidden):
            return None
        blocks.append((kind, content))
        pos = end + len(closer)


def _matches(text: str, grammar: re.Pattern[str]) -> float:
    blocks = _blocks(text)
    if blocks is None or not grammar.fullmatch("".join(kind for kind, _ in blocks)):
        return 0.0
    # Think, search and answer must say something; documents may be empty.
    return float(all(content.strip() for kind, content in blocks if kind != "d"))


def strict_format(text: str) -> float:
    """1.0 if `text` is exactly `<think>T</think>`, optional whitespace, `<answer>A</answer>`
    and only whitespace after it, with T and A non-empty after strip and free of protocol tags;
    else 0.0. search_r1's format without retrieval: any search or document block fails it."""
    return _matches(text, _STRICT)


def search_r1_format(text: str) -> float:
    """1.0 if `text` is `<think>T</think>`, then zero or more rounds of `<search>Q</search>`,
    one or more `<document>D</document>` and `<think>T</think>`, then `<answer>A</answer>` and
    only whitespace (whitespace allowed between all blocks); else 0.0. T, Q and A are non-empty
    after strip and contain no protocol tag; D is any text without a document tag. A search
    without documents, documents without a search, or a search right before the answer fail
    it. With zero rounds it equals `strict_format`."""
    return _matches(text, _SEARCH)


_THINK_BLOCK = re.compile(re.escape(THINK_OPEN) + r"(.*?)" + re.escape(THINK_CLOSE), re.DOTALL)
_DOCUMENT_BLOCK = re.compile(re.escape(DOCUMENT_OPEN) + r".*?" + re.escape(DOCUMENT_CLOSE), re.DOTALL)
_ANSWER_BLOCK = re.compile(re.escape(ANSWER_OPEN) + r"(.*?)" + re.escape(ANSWER_CLOSE), re.DOTALL)


def search_r1_think_and_answer(text: str) -> tuple[str, str]:
    """The policy's own words, read leniently (also from a malformed text): the contents of all
    complete think blocks, stripped and joined with "\\n", and the content of the last complete
    answer block, stripped ("" if none). Inserted documents are removed first so that
    retrieved text never counts as the policy's thinking."""
    text = _DOCUMENT_BLOCK.sub(" ", text)
    think = "\n".join(block.strip() for block in _THINK_BLOCK.findall(text))
    answers = _ANSWER_BLOCK.findall(text)
    return think, answers[-1].strip() if answers else ""
