"""Reasoning-graph reward (Med-R3 stage 3): how closely the knowledge graph behind a rollout's
`<think>` text matches a reference reasoning graph.

    score = graph_score(triples, [ref.triples for ref in refs], think_vec, ref_vecs)
    # = max over references of mean(path Jaccard, entity Jaccard, clip(cosine, 0, 1))

    reward = GraphReward(judge, embed)                  # judge extracts triples, embed -> [N, E]
    scores = reward(think_texts, references_per_item)   # list[float | None], or None if disabled

Entities and relations are compared after `normalize` (lower case, single spaces, sentence
punctuation and brackets stripped at the ends). Path pairs are the transitive closure of the
directed graph: A->B->C yields (A,B), (B,C) and (A,C).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Callable, Collection, Iterable, Sequence

import numpy as np

from medr3_jax.rewards.judge import Judge, JudgeStats, Triple, extract_triples

log = logging.getLogger(__name__)

Embed = Callable[[list[str]], np.ndarray]  # texts -> [N, E] vectors (our BERT encoder in production)

# Stripped at the ends of names: sentence punctuation, quotes, brackets (ASCII and CJK). Signs
# such as + - % stay: "HER2+" and "HER2-" are different entities.
_EDGE_CHARS = " \t\n\r.,;:!?\"'`()[]{}<>。，、；：！？“”‘’（）《》【】"
_SPACES = re.compile(r"\s+")


def normalize(name: str) -> str:
    """Lower case, whitespace runs to one space, punctuation/brackets stripped at the ends."""
    return _SPACES.sub(" ", name.lower()).strip(_EDGE_CHARS)


def normalize_triples(triples: Iterable[Sequence[str]]) -> list[Triple]:
    """Each (head, relation, tail) normalised; triples whose head or tail becomes empty dropped."""
    out = []
    for head, relation, tail in triples:
        head, relation, tail = normalize(head), normalize(relation), normalize(tail)
        if head and tail:
            out.append((head, relation, tail))
    return out


def entities(triples: Iterable[Sequence[str]]) -> set[str]:
    """Heads and tails, normalised."""
    return {name for head, _, tail in normalize_triples(triples) for name in (head, tail)}


def reachable_pairs(triples: Iterable[Sequence[str]]) -> set[tuple[str, str]]:
    """Directed (u, v) with a path u -> ... -> v along the triples (transitive closure),
    normalised; pairs (u, u) from loops are left out (they relate no two entities)."""
    edges: dict[str, set[str]] = {}
    for head, _, tail in normalize_triples(triples):
        edges.setdefault(head, set()).add(tail)
    pairs = set()
    for source in edges:
        seen, frontier = set(), [source]
        while frontier:  # depth-first search from `source`
            for nxt in edges.get(frontier.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        pairs.update((source, v) for v in seen if v != source)
    return pairs


def jaccard(a: Collection[object], b: Collection[object]) -> float:
    """|a ∩ b| / |a ∪ b|; 0.0 when both are empty (no graph is no evidence of reasoning)."""
    a, b = set(a), set(b)
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def entity_jaccard(a: Iterable[Sequence[str]], b: Iterable[Sequence[str]]) -> float:
    return jaccard(entities(a), entities(b))


def path_jaccard(a: Iterable[Sequence[str]], b: Iterable[Sequence[str]]) -> float:
    return jaccard(reachable_pairs(a), reachable_pairs(b))


def clipped_cosine(u: np.ndarray, v: np.ndarray) -> float:
    """cos(u, v) clipped to [0, 1]; 0.0 when either vector is zero."""
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    norms = float(np.linalg.norm(u) * np.linalg.norm(v))
    return float(np.clip(u @ v / norms, 0.0, 1.0)) if norms > 0 else 0.0


def graph_score(
    triples: Sequence[Sequence[str]],
    references: Sequence[Sequence[Sequence[str]]],
    think_embedding: np.ndarray,
    reference_embeddings: np.ndarray,
) -> float:
    """max over references r of (path_J(t, r) + entity_J(t, r) + clip(cos(e, e_r), 0, 1)) / 3.

    think_embedding [E]; reference_embeddings [R, E], row r embedding reference r's text.
    Raises ValueError without references (the caller disables the reward instead).
    """
    if not references:
        raise ValueError("graph_score: no reference graphs to score against")
    reference_embeddings = np.asarray(reference_embeddings)
    if reference_embeddings.ndim != 2 or reference_embeddings.shape[0] != len(references):
        raise ValueError(
            f"graph_score: reference_embeddings has shape {reference_embeddings.shape}, "
            f"expected [{len(references)}, E] (one row per reference)"
        )
    scores = [
        (path_jaccard(triples, ref) + entity_jaccard(triples, ref) + clipped_cosine(think_embedding, vec)) / 3.0
        for ref, vec in zip(references, reference_embeddings)
    ]
    return max(scores)


@dataclasses.dataclass(frozen=True)
class ReferenceGraph:
    """One reference reasoning: its triples, and the text whose embedding the cosine term uses."""

    triples: tuple[Triple, ...]
    text: str


class GraphReward:
    """The reasoning-graph reward for a batch of think texts, each with its reference graphs.

    reward = GraphReward(judge, embed)
    scores = reward(["insulin lowers glucose ..."], [[ReferenceGraph(triples, text)]])

    Returns None for the whole batch when disabled (no judge, or no item has a reference graph;
    one warning per reason per instance). Within a batch an item scores None when it has no
    reference or its triple extraction failed; the combiner counts those and scores them 0.
    """

    def __init__(self, judge: Judge | None, embed: Embed, *, stats: JudgeStats | None = None):
        self.judge = judge
        self.embed = embed
        self.stats = stats
        self._warned: set[str] = set()

    def _disabled(self, why: str) -> None:
        if why not in self._warned:
            self._warned.add(why)
            log.warning("reasoning-graph reward disabled: %s", why)
        return None

    def __call__(
        self, think_texts: Sequence[str], references: Sequence[Sequence[ReferenceGraph]]
    ) -> list[float | None] | None:
        if len(think_texts) != len(references):
            raise ValueError(f"GraphReward: {len(think_texts)} think texts but {len(references)} reference lists")
        if self.judge is None:
            return self._disabled("no judge")
        if not any(references):
            return self._disabled("no reference graphs")
        todo = [i for i, refs in enumerate(references) if refs]
        triples = self._triples([think_texts[i] for i in todo])
        vectors = self._embed([think_texts[i] for i in todo] + [r.text for i in todo for r in references[i]])
        scores: list[float | None] = [None] * len(think_texts)
        for k, i in enumerate(todo):
            refs = references[i]
            ref_vecs = np.stack([vectors[r.text] for r in refs])
            if triples[k] is not None:
                scores[i] = graph_score(triples[k], [r.triples for r in refs], vectors[think_texts[i]], ref_vecs)
        return scores

    def _triples(self, texts: list[str]) -> list[list[Triple] | None]:
        """Judge-extracted triples; an empty think text has none (no request is spent on it)."""
        asked = [i for i, text in enumerate(texts) if text.strip()]
        got = extract_triples(self.judge, [texts[i] for i in asked], self.stats) if asked else []
        out: list[list[Triple] | None] = [[] for _ in texts]
        for i, triples in zip(asked, got):
            out[i] = triples
        return out

    def _embed(self, texts: list[str]) -> dict[str, np.ndarray]:
        """text -> vector, each distinct text embedded once (references repeat across a group)."""
        unique = list(dict.fromkeys(texts))
        vectors = np.asarray(self.embed(unique))
        if vectors.ndim != 2 or vectors.shape[0] != len(unique):
            raise ValueError(f"GraphReward: embed returned shape {vectors.shape} for {len(unique)} texts")
        return dict(zip(unique, vectors))
