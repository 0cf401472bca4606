"""Stop strings matched at the token level, whatever tokenisation they take in context.

`</search>` is several tokens in most vocabularies, and the model may also write it as
`…</` + `search>` or glued to neighbouring text (`"x</search>\\n"`). We compile the stop
strings into one Aho–Corasick automaton over bytes, then run it over every vocabulary
token's bytes from every automaton state: `next_state[s, t]` and `match[s, t]` (the stop
string completed inside token t, or -1). Inside the decode loop a row carries one int of
automaton state, and a stop costs two table lookups per sampled token.

    table = StopTable.build(["</search>", "<document>"], tokenizer.token_bytes())
    state, hit = table.next_state[state, token], table.match[state, token]
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class StopTable:
    """Token-level transition tables of the stop-string automaton (host numpy arrays).

    strings:    the stop strings, index = match id.
    next_state: int32 [S, V] automaton state after reading token V's bytes from state S.
    match:      int32 [S, V] id of the first stop string completed while reading the token, or -1.
    State 0 is "nothing matched yet"; a row is reset to 0 whenever foreign text is inserted.
    """

    strings: tuple[str, ...]
    next_state: np.ndarray
    match: np.ndarray

    @classmethod
    def build(cls, strings: Sequence[str], token_bytes: Sequence[bytes]) -> StopTable:
        strings = tuple(strings)
        if any(not s for s in strings):
            raise ValueError(f"stop strings must be non-empty, got {strings!r}")
        delta, output = _byte_automaton([s.encode("utf-8") for s in strings])
        next_state, match = _token_tables(delta, output, token_bytes)
        return cls(strings=strings, next_state=next_state, match=match)

    @property
    def num_states(self) -> int:
        return self.next_state.shape[0]


def _byte_automaton(patterns: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Aho–Corasick as a full DFA: delta [S, 256] and output [S] (pattern id ending here, or -1).

    When several patterns end at a state, the one that ends earliest in the trie order (the
    longest, reached first) is reported; any report stops the row, which is all we need.
    """
    goto: list[dict[int, int]] = [{}]
    output = [-1]
    for pid, pattern in enumerate(patterns):
        state = 0
        for byte in pattern:
            if byte not in goto[state]:
                goto.append({})
                output.append(-1)
                goto[state][byte] = len(goto) - 1
            state = goto[state][byte]
        if output[state] == -1:
            output[state] = pid
    delta = np.zeros((len(goto), 256), np.int32)
    fail = [0] * len(goto)
    queue: collections.deque[int] = collections.deque()
    for byte in range(256):
        child = goto[0].get(byte)
        if child is not None:
            delta[0, byte] = child
            queue.append(child)
    while queue:  # breadth-first: a state's failure target is complete before its children
        state = queue.popleft()
        if output[state] == -1:
            output[state] = output[fail[state]]
        for byte in range(256):
            child = goto[state].get(byte)
            if child is None:
                delta[state, byte] = delta[fail[state], byte]
            else:
                fail[child] = delta[fail[state], byte]
                delta[state, byte] = child
                queue.append(child)
    return delta, np.asarray(output, np.int32)


def _token_tables(delta: np.ndarray, output: np.ndarray, token_bytes: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Run the byte DFA over every token from every state, vectorised over the vocabulary."""
    vocab = len(token_bytes)
    lengths = np.fromiter((len(b) for b in token_bytes), np.int64, vocab)
    order = np.argsort(-lengths, kind="stable")  # longest first: position j touches a prefix
    width = int(lengths.max(initial=0))
    padded = np.zeros((vocab, max(width, 1)), np.uint8)
    for row, token in enumerate(order):
        raw = token_bytes[token]
        padded[row, : len(raw)] = np.frombuffer(raw, np.uint8)
    sorted_len = lengths[order]
    active_count = [int(np.searchsorted(-sorted_len, -j, side="left")) for j in range(width)]
    num_states = delta.shape[0]
    next_state = np.empty((num_states, vocab), np.int32)
    match = np.empty((num_states, vocab), np.int32)
    for start in range(num_states):
        state = np.full(vocab, start, np.int32)
        hit = np.full(vocab, -1, np.int32)
        for j in range(width):
            n = active_count[j]  # tokens longer than j
            new = delta[state[:n], padded[:n, j]]
            state[:n] = new
            found = output[new]
            hit[:n] = np.where(hit[:n] == -1, found, hit[:n])
        next_state[start, order] = state
        match[start, order] = hit
    return next_state, match
