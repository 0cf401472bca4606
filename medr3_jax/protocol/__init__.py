"""The trajectory protocol, in one place: tags, stop strings, prompt templates, search-turn
parsing, document blocks, format grammars and the assistant-prefix rule. A leaf: it imports
nothing else of the package, and nothing else of the package spells a tag.

    proto = get_protocol("med_r3")                       # or "search_r1"; Experiment.protocol
    body = proto.prompt_body("Which drug ...?", options={}, context="", retrieval=True, max_searches=4)
    text = proto.raw_prompt(body)                        # "... Quesion: Which drug ...?\\nResponse: <think>"
    proto.stop_strings(retrieval=True)                   # ("</search>", "<document>", "</document>")
    proto.format_score(assistant_text, retrieval=True)   # 1.0 / 0.0
    think, answer = proto.think_and_answer(assistant_text)
    blocks = proto.document_blocks(tokenizer.encode)     # token blocks of retrieved passages

Two protocols, so that prompt, stop strings, parser and grammar can never disagree:

- `med_r3` (the default): the authors' (GitHub 8023looker/Med-R3). The model searches inside
  its single think block; passages come back as `<document>{chunk}</document>` blocks written
  back to back right after `</search>` (`search_utils.py`); the format is their
  `score_think_pattern`; think/answer are their `get_think_and_answer`.
- `search_r1`: Search-R1's. The model closes `</think>`, searches, reads documents, opens a new
  think block; passages come back as `\\n<document>…</document>` blocks and a newline.

`assistant_text` is `assistant_prefix(prompt) + response`: the prompt's trailing `<think>` (and
anything prefilled after it) opens the text that the grammars read.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

from medr3_jax.protocol import grammar, prompts
from medr3_jax.protocol.grammar import clean_search_blocks, med_r3_format, med_r3_think_and_answer, strict_format
from medr3_jax.protocol.search import (
    BAD_SEARCH_FLAGS,
    FLAG_BAD_SEARCH,
    FLAG_LENGTH,
    FLAG_RESPONSE_CAP,
    FLAG_RETRIEVAL_FAILED,
    FLAG_SEARCH_CAP,
    FLAG_WROTE_DOCUMENT,
    DocumentBlocks,
    MalformedSearch,
    parse_search_turn,
)
from medr3_jax.protocol.tags import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    DOCUMENT_CLOSE,
    DOCUMENT_OPEN,
    END_OF_TEXT,
    SEARCH_CLOSE,
    SEARCH_FAILED_TEXT,
    SEARCH_OPEN,
    STOP_STRINGS,
    TAGS,
    THINK_CLOSE,
    THINK_OPEN,
    scrub_passage,
)

_Body = Callable[..., str]


@dataclasses.dataclass(frozen=True)
class Protocol:
    """One named protocol (see the module docstring). Build none yourself: `get_protocol`."""

    name: str
    body: _Body  # (question, *, options, context, retrieval, max_searches) -> instructions + question
    response_cue: str  # raw prompts: text between the question and the final `<think>`
    grammar: Callable[[str], float]  # format with retrieval on
    grammar_without_retrieval: Callable[[str], float]
    split: Callable[[str], tuple[str, str]]  # (think, answer)
    document_open: str
    document_close: str
    document_tail: str

    def prompt_body(self, question: str, *, options: Mapping[str, str], context: str, retrieval: bool,
                    max_searches: int) -> str:  # fmt: skip
        """Instructions and question: the raw prompt without its cue, or a chat's user turn."""
        return self.body(question, options=options, context=context, retrieval=retrieval, max_searches=max_searches)

    def raw_prompt(self, body: str) -> str:
        """A raw-text prompt (base checkpoints): `body`, the cue, and `<think>`."""
        return body + self.response_cue + THINK_OPEN

    def stop_strings(self, *, retrieval: bool) -> tuple[str, ...]:
        """What decoding stops on: the search/document tags when searching, nothing otherwise
        (a rollout without retrieval runs each row to its end of text)."""
        return STOP_STRINGS if retrieval else ()

    def format_score(self, text: str, *, retrieval: bool) -> float:
        """1.0 when the assistant text is well formed under this protocol, else 0.0."""
        return (self.grammar if retrieval else self.grammar_without_retrieval)(text)

    def think_and_answer(self, text: str) -> tuple[str, str]:
        """(think text without search/document blocks, answer text), both stripped."""
        return self.split(text)

    def document_blocks(self, encode: Callable[[str], Sequence[int]]) -> DocumentBlocks:
        """Token blocks of inserted passages and of the failure notice, in this protocol's layout."""
        return DocumentBlocks.build(
            encode,
            open_text=self.document_open,
            close_text=self.document_close,
            tail_text=self.document_tail,
            failed_text=self.document_open + SEARCH_FAILED_TEXT + self.document_close + self.document_tail,
        )


MED_R3 = Protocol(
    name="med_r3",
    body=prompts.med_r3_body,
    response_cue=prompts.MED_R3_CUE,
    grammar=med_r3_format,
    grammar_without_retrieval=med_r3_format,
    split=med_r3_think_and_answer,
    document_open=DOCUMENT_OPEN,
    document_close=DOCUMENT_CLOSE,
    document_tail="",
)
SEARCH_R1 = Protocol(
    name="search_r1",
    body=prompts.search_r1_body,
    response_cue=prompts.SEARCH_R1_CUE,
    grammar=grammar.search_r1_format,
    grammar_without_retrieval=strict_format,
    split=grammar.search_r1_think_and_answer,
    document_open="\n" + DOCUMENT_OPEN,
    document_close=DOCUMENT_CLOSE,
    document_tail="\n",
)
PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (MED_R3, SEARCH_R1)}


def get_protocol(name: str, knob: str = "Experiment.protocol") -> Protocol:
    """The protocol called `name`; a ValueError naming `knob` and the choices otherwise."""
    if name not in PROTOCOLS:
        raise ValueError(f"{knob}={name!r}: expected one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]


def assistant_prefix(prompt_text: str) -> str:
    """The assistant text a prompt already holds: from its last `<think>` to its end (so
    "<think>" for every Med-R3 prompt, or "<think>I should check.</think><search" for a prompt
    that prefills part of a search_r1 turn), or "" when it has none or an `<answer>` tag
    follows it (instructions that quote the tags, "<think>...</think><answer>...</answer>").
    The one rule that rollout (search parsing of the first turn) and rewards (the text the
    grammars read) share."""
    at = prompt_text.rfind(THINK_OPEN)
    if at < 0 or ANSWER_OPEN in prompt_text[at:]:
        return ""
    return prompt_text[at:]


__all__ = [
    "ANSWER_CLOSE",
    "ANSWER_OPEN",
    "BAD_SEARCH_FLAGS",
    "DOCUMENT_CLOSE",
    "DOCUMENT_OPEN",
    "END_OF_TEXT",
    "FLAG_BAD_SEARCH",
    "FLAG_LENGTH",
    "FLAG_RESPONSE_CAP",
    "FLAG_RETRIEVAL_FAILED",
    "FLAG_SEARCH_CAP",
    "FLAG_WROTE_DOCUMENT",
    "MED_R3",
    "PROTOCOLS",
    "SEARCH_CLOSE",
    "SEARCH_FAILED_TEXT",
    "SEARCH_OPEN",
    "SEARCH_R1",
    "STOP_STRINGS",
    "TAGS",
    "THINK_CLOSE",
    "THINK_OPEN",
    "DocumentBlocks",
    "MalformedSearch",
    "Protocol",
    "assistant_prefix",
    "clean_search_blocks",
    "get_protocol",
    "med_r3_format",
    "med_r3_think_and_answer",
    "parse_search_turn",
    "scrub_passage",
    "strict_format",
]
