"""Format rewards: does a trajectory follow the Med-R3 tag protocol? Pure functions of text.

`text` is the assistant side of a trajectory: `<think>` (the end of the prompt) plus the
response, with the `<document>` blocks the system inserted and without end-of-turn tokens.

    strict_format("<think>Insulin lowers glucose.</think>\\n<answer>B</answer>")             -> 1.0
    search_format("<think>?</think><search>q</search><document>d</document>"
                  "<think>so B</think><answer>B</answer>")                                 -> 1.0
    think_and_answer("<think>a</think><think>b</think><answer>B</answer>")                -> ("a\\nb", "B")

The text is read as a sequence of blocks `<name>content</name>` (name one of think, search,
document, answer) separated by whitespace only; anything else (text outside a block, an
unclosed or stray tag, a tag inside a think/search/answer block, a `<document>` inside a
document) makes the format 0. Leading whitespace and trailing whitespace are allowed.
"""

from __future__ import annotations

import re

from medr3_jax.models.tokenizers import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    DOCUMENT_CLOSE,
    DOCUMENT_OPEN,
    SEARCH_CLOSE,
    SEARCH_OPEN,
    THINK_CLOSE,
    THINK_OPEN,
)

TAGS: tuple[str, ...] = (
    THINK_OPEN,
    THINK_CLOSE,
    SEARCH_OPEN,
    SEARCH_CLOSE,
    DOCUMENT_OPEN,
    DOCUMENT_CLOSE,
    ANSWER_OPEN,
    ANSWER_CLOSE,
)
_BLOCKS = {THINK_OPEN: ("t", THINK_CLOSE), SEARCH_OPEN: ("s", SEARCH_CLOSE)}
_BLOCKS |= {DOCUMENT_OPEN: ("d", DOCUMENT_CLOSE), ANSWER_OPEN: ("a", ANSWER_CLOSE)}
_WHITESPACE = re.compile(r"\s*")
# Stage 1: one think, one answer. Stages 2-3: think, then rounds of search -> documents -> think.
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
    else 0.0. The stage-1 format (no retrieval): any search or document block fails it."""
    return _matches(text, _STRICT)


def search_format(text: str) -> float:
    """1.0 if `text` is `<think>T</think>`, then zero or more rounds of `<search>Q</search>`,
    one or more `<document>D</document>` and `<think>T</think>`, then `<answer>A</answer>` and
    only whitespace (whitespace allowed between all blocks); else 0.0 (Search-R1 style, stages
    2-3). T, Q and A are non-empty after strip and contain no protocol tag; D is any text
    without a document tag. A search without documents, documents without a search, or a
    search right before the answer fail it. With zero rounds it equals `strict_format`."""
    return _matches(text, _SEARCH)


_THINK_BLOCK = re.compile(re.escape(THINK_OPEN) + r"(.*?)" + re.escape(THINK_CLOSE), re.DOTALL)
_DOCUMENT_BLOCK = re.compile(re.escape(DOCUMENT_OPEN) + r".*?" + re.escape(DOCUMENT_CLOSE), re.DOTALL)
_ANSWER_BLOCK = re.compile(re.escape(ANSWER_OPEN) + r"(.*?)" + re.escape(ANSWER_CLOSE), re.DOTALL)


def think_and_answer(text: str) -> tuple[str, str]:
    """The policy's own words, read leniently (also from a malformed text), for the penalties:
    the contents of all complete think blocks, stripped and joined with "\\n", and the content
    of the last complete answer block, stripped ("" if none). Inserted documents are removed
    first so that retrieved text never counts as the policy's thinking."""
    text = _DOCUMENT_BLOCK.sub(" ", text)
    think = "\n".join(block.strip() for block in _THINK_BLOCK.findall(text))
    answers = _ANSWER_BLOCK.findall(text)
    return think, answers[-1].strip() if answers else ""
