"""Stop-string automaton against brute force on the real SmolLM2 vocabulary."""

from __future__ import annotations

import numpy as np
import pytest

from medr3_jax.protocol import STOP_STRINGS
from medr3_jax.sampling.stops import StopTable


@pytest.fixture(scope="module")
def smol(smollm2):
    _, tok = smollm2
    raw = tok.token_bytes()
    return tok, raw, StopTable.build(STOP_STRINGS, raw)


def _first_stop_brute_force(raw: list[bytes], ids: list[int]) -> int:
    """Index of the first token after which the text contains a stop string, or -1."""
    text = b""
    for i, t in enumerate(ids):
        text += raw[t]
        if any(s.encode() in text for s in STOP_STRINGS):
            return i
    return -1


def _first_stop_table(table: StopTable, ids: list[int]) -> int:
    state = 0
    for i, t in enumerate(ids):
        if table.match[state, t] >= 0:
            return i
        state = table.next_state[state, t]
    return -1


def test_every_tokenisation_is_caught(smol):
    """Texts cut at random points and tokenised piecewise: the stop string takes many forms."""
    tok, raw, table = smol
    rng = np.random.default_rng(0)
    fragments = ["<search>", "</search>", "</", "search", ">", "<document>", "</document>", " doc", "x<", "/s", "\n"]
    seen_multi = 0
    for _ in range(400):
        text = "".join(rng.choice(fragments, size=rng.integers(1, 8)))
        cuts = sorted(rng.choice(len(text) + 1, size=rng.integers(0, 4), replace=True))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)]) if b > a]
        ids = [i for p in pieces for i in tok.encode(p)]
        want = _first_stop_brute_force(raw, ids)
        assert _first_stop_table(table, ids) == want, (pieces, [raw[i] for i in ids])
        seen_multi += want > 0
    assert seen_multi > 50  # the test really exercised multi-token stops


def test_matched_id_names_the_string(smol):
    tok, _, table = smol
    for sid, stop in enumerate(STOP_STRINGS):
        ids = tok.encode("abc " + stop)
        state = 0
        for t in ids[:-1]:
            state = table.next_state[state, t]
        assert table.match[state, ids[-1]] == sid


def test_empty_stop_string_is_rejected():
    with pytest.raises(ValueError, match="non-empty"):
        StopTable.build(["", "</search>"], [b"a"])
