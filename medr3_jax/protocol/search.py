"""Search turns at the text/token boundary: reading the query of a turn, the row flags, and
the token blocks the system inserts (retrieved passages, or the failure notice).

    query = parse_search_turn("...<search> insulin secretion </search>")      # "insulin secretion"
    blocks = DocumentBlocks.build(tokenizer.encode, open_text="<document>", close_text="</document>",
                                  tail_text="")
    ids = blocks.passages([[101, 102], [103]])       # <document>…</document><document>…</document>

A turn is the text the policy sampled since the prompt (with the prompt's assistant prefix)
or since the last insertion. A turn that stopped at `</search>` must hold exactly one
`<search>` and a non-empty query (the authors' rule in `vllm_rollout_retrieval_spmd.py`);
anything else is malformed: the row is terminated, flagged, and its reward becomes the
bad-search value.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from medr3_jax.protocol.tags import SEARCH_CLOSE, SEARCH_OPEN

# Flags a row can carry (a row may carry several).
FLAG_BAD_SEARCH = "bad_search"  # `</search>` without exactly one `<search>` or with an empty query
FLAG_WROTE_DOCUMENT = "wrote_document"  # the policy wrote `<document>` / `</document>` itself
FLAG_SEARCH_CAP = "search_cap"  # asked for a search beyond the row's budget of searches
FLAG_RESPONSE_CAP = "response_cap"  # the documents would not fit under the response-length cap
FLAG_RETRIEVAL_FAILED = "retrieval_failed"  # a search got the failure notice (timeout/exception)
FLAG_LENGTH = "length"  # sampled up to the response-length cap without finishing
BAD_SEARCH_FLAGS = frozenset({FLAG_BAD_SEARCH, FLAG_WROTE_DOCUMENT})  # `search_bad_format` in the authors' code


class MalformedSearch(ValueError):
    """A search turn that breaks the protocol; the message says how."""


def parse_search_turn(turn: str) -> str:
    """The query of a turn that ended with `</search>` (text after the last `</search>`, a
    piece of its final token, is ignored). Raises MalformedSearch."""
    end = turn.rfind(SEARCH_CLOSE)
    if end < 0:
        raise MalformedSearch(f"no {SEARCH_CLOSE} in the turn")
    body = turn[:end]
    opens = body.count(SEARCH_OPEN)
    if opens != 1:
        raise MalformedSearch(f"{opens} {SEARCH_OPEN} tags before {SEARCH_CLOSE} (expected exactly one)")
    if body.count(SEARCH_CLOSE):
        raise MalformedSearch(f"a second {SEARCH_CLOSE} in one turn")
    query = body.split(SEARCH_OPEN, 1)[1].strip()
    if not query:
        raise MalformedSearch("empty query")
    return query


@dataclasses.dataclass(frozen=True)
class DocumentBlocks:
    """Token ids of the inserted blocks, built from pre-tokenised passages (never
    re-tokenised): for each passage `open` + passage tokens + `close`, then `tail`; a failed
    search inserts one block holding SEARCH_FAILED_TEXT."""

    open_ids: tuple[int, ...]
    close_ids: tuple[int, ...]
    tail_ids: tuple[int, ...]
    failed_ids: tuple[int, ...]

    @classmethod
    def build(cls, encode: Callable[[str], Sequence[int]], *, open_text: str, close_text: str, tail_text: str,
              failed_text: str) -> DocumentBlocks:  # fmt: skip
        enc = lambda s: tuple(encode(s)) if s else ()  # noqa: E731
        return cls(enc(open_text), enc(close_text), enc(tail_text), enc(failed_text))

    def passages(self, passage_tokens: Sequence[Sequence[int]]) -> list[int]:
        out: list[int] = []
        for tokens in passage_tokens:
            out += [*self.open_ids, *tokens, *self.close_ids]
        return out + list(self.tail_ids)

    def failed(self) -> list[int]:
        return list(self.failed_ids)
