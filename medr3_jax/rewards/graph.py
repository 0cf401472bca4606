"""Reasoning-graph reward (Med-R3 stage 3), as the authors compute it (`graph_logical_score`,
`graph_semantic_score`, `graph_statistic_score`, `normalize_reasoning_reward` and the graph part
of `compute_score` in `contrib/med_reasoning_logical.py`, GitHub 8023looker/Med-R3).

    score = graph_score(think_graph, think_vec, [ref.triples for ref in refs], ref_vecs)  # data.references
    # = max over references of mean(path Jaccard, cosine, entity Jaccard)

    reward = GraphReward(judge, embed, embed_id=retriever.embedding_id)  # judge extracts, embed -> [N, E]
    scores = reward(think_texts, references_per_item)   # list[float | None], or None if disabled

A graph is a list of entries [head, relation, tail, if_retrieval] compared as written (exact
strings: the extraction prompt shows the judge the reference graphs so that it reuses their
wording). Paths are relation-aware multi-hop walks from the root nodes (`multihop_paths`).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import numpy as np

from medr3_jax.data.references import Reference
from medr3_jax.rewards.judge import Judge, JudgeStats, extract_graphs, graph_prompt

log = logging.getLogger(__name__)

Embed = Callable[[list[str]], np.ndarray]  # texts -> [N, E] vectors (our BERT encoder in production)
Graph = Sequence[Sequence[Any]]  # entries [head, relation, tail, if_retrieval]


def multihop_paths(graph: Graph) -> set[tuple[Any, ...]]:
    """The authors' paths (`construct_multihop_paths`): from each root (a head that is never a
    tail), every edge is a 1-hop path (head, relation, tail); each path then grows along the
    first edge out of its end that it has not used, one hop per round; paths that reach the same
    entity in the same round continue as the last of them. Returns every path of every length."""
    edges: dict[Any, list[tuple[Any, Any]]] = {}
    for entry in graph:
        edges.setdefault(entry[0], []).append((entry[1], entry[2]))
    roots = {entry[0] for entry in graph} - {entry[2] for entry in graph}
    paths: set[tuple[Any, ...]] = set()
    for root in roots:
        frontier: dict[Any, tuple[tuple[Any, ...], frozenset[tuple[Any, int]]]] = {}
        for k, (relation, tail) in enumerate(edges[root]):
            paths.add((root, relation, tail))
            frontier[tail] = ((root, relation, tail), frozenset({(root, k)}))
        while frontier:
            grown: dict[Any, tuple[tuple[Any, ...], frozenset[tuple[Any, int]]]] = {}
            for node, (path, used) in frontier.items():
                step = next(((k, r, t) for k, (r, t) in enumerate(edges.get(node, ())) if (node, k) not in used), None)
                if step is not None:
                    k, relation, tail = step
                    grown[tail] = (path + (relation, tail), used | {(node, k)})
                    paths.add(grown[tail][0])
            frontier = grown
    return paths


def _jaccard(a: set, b: set) -> float:
    union = a | b
    return len(a & b) / len(union) if union else 0.0


def path_jaccard(a: Graph, b: Graph) -> float:
    """Jaccard of the two graphs' multi-hop paths (`graph_logical_score`); 0 when both have none."""
    return _jaccard(multihop_paths(a), multihop_paths(b))


def entity_jaccard(a: Graph, b: Graph) -> float:
    """Jaccard of the heads and tails, as written (`graph_statistic_score`)."""
    return _jaccard({e[0] for e in a} | {e[2] for e in a}, {e[0] for e in b} | {e[2] for e in b})


def cosine(u: np.ndarray, v: np.ndarray) -> float:
    """cos(u, v), unclipped (`graph_semantic_score`); 0 when either vector is zero."""
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    norms = float(np.linalg.norm(u) * np.linalg.norm(v))
    return float(u @ v / norms) if norms > 0 else 0.0


def _or_zero(term: Callable[[], float], name: str) -> float:
    """A term the authors compute inside try/except: 0 when a malformed entry breaks it."""
    try:
        return term()
    except (IndexError, KeyError, TypeError, ValueError) as err:
        log.debug("reasoning-graph %s term failed (%s: %s); it counts 0", name, type(err).__name__, err)
        return 0.0


def reference_score(graph: Graph, vector: np.ndarray, ref_graph: Graph, ref_vector: np.ndarray) -> float:
    """(path Jaccard + cosine + entity Jaccard) / 3 against one reference (`normalize_reasoning_reward`,
    alpha = beta = gamma = 1); a term that a malformed entry breaks counts 0, as theirs."""
    logic = _or_zero(lambda: path_jaccard(graph, ref_graph), "path")
    semantic = _or_zero(lambda: cosine(vector, ref_vector), "cosine")
    stats = _or_zero(lambda: entity_jaccard(graph, ref_graph), "entity")
    return (logic + semantic + stats) / 3.0


def graph_score(graph: Graph, vector: np.ndarray, references: Sequence[Graph], reference_vectors: np.ndarray) -> float:
    """max over references r of `reference_score(graph, vector, r, its vector)`.

    vector [E] embeds the think text; reference_vectors [R, E], row r embedding reference r.
    Raises ValueError without references (the caller leaves the term out instead).
    """
    if not references:
        raise ValueError("graph_score: no reference graphs to score against")
    reference_vectors = np.asarray(reference_vectors)
    if reference_vectors.ndim != 2 or reference_vectors.shape[0] != len(references):
        raise ValueError(
            f"graph_score: reference_vectors has shape {reference_vectors.shape}, "
            f"expected [{len(references)}, E] (one row per reference)"
        )
    return max(reference_score(graph, vector, ref, vec) for ref, vec in zip(references, reference_vectors))


class GraphReward:
    """The reasoning-graph reward for a batch of think texts, each with its reference graphs.

    reward = GraphReward(judge, embed, embed_id=retriever.embedding_id)
    scores = reward(["insulin lowers glucose ..."], [references])     # data.references.Reference

    Returns None for the whole batch when disabled (no judge, or no item has a reference graph;
    one warning per reason per instance). An item without references scores None. An item whose
    extraction failed or could not be read is scored with an empty graph, so only its cosine
    counts (the authors' `read_json` gives [] then). A reference's stored vector is used when its
    `encoder` equals `embed_id` (the authors store `reasoning_vector` likewise); otherwise its
    think text is embedded with `embed`.
    """

    def __init__(
        self, judge: Judge | None, embed: Embed, *, embed_id: str | None = None, stats: JudgeStats | None = None
    ):
        self.judge = judge
        self.embed = embed
        self.embed_id = embed_id
        self.stats = stats
        self._warned: set[str] = set()

    def _disabled(self, why: str) -> None:
        if why not in self._warned:
            self._warned.add(why)
            log.warning("reasoning-graph reward disabled: %s", why)
        return None

    def __call__(
        self, think_texts: Sequence[str], references: Sequence[Sequence[Reference]]
    ) -> list[float | None] | None:
        if len(think_texts) != len(references):
            raise ValueError(f"GraphReward: {len(think_texts)} think texts but {len(references)} reference lists")
        if self.judge is None:
            return self._disabled("no judge")
        if not any(references):
            return self._disabled("no reference graphs")
        todo = [i for i, refs in enumerate(references) if refs]
        graphs = self._graphs([think_texts[i] for i in todo], [references[i] for i in todo])
        stored = lambda r: self.embed_id is not None and r.vector is not None and r.encoder == self.embed_id  # noqa: E731
        vectors = self._embed(
            [think_texts[i] for i in todo] + [r.text for i in todo for r in references[i] if not stored(r)]
        )
        scores: list[float | None] = [None] * len(think_texts)
        for graph, i in zip(graphs, todo):
            refs = references[i]
            ref_vecs = np.stack([np.asarray(r.vector) if stored(r) else vectors[r.text] for r in refs])
            scores[i] = graph_score(graph, vectors[think_texts[i]], [r.triples for r in refs], ref_vecs)
        return scores

    def _graphs(self, texts: list[str], references: list[Sequence[Reference]]) -> list[Graph]:
        """Judge-extracted graphs, one request per text (an empty think text too, as the authors
        send it); [] for a failed request or an unreadable reply."""
        prompts = [graph_prompt(text, [r.as_json() for r in refs]) for text, refs in zip(texts, references)]
        return [graph or [] for graph in extract_graphs(self.judge, prompts, self.stats)]

    def _embed(self, texts: list[str]) -> dict[str, np.ndarray]:
        """text -> vector, each distinct text embedded once (references repeat across a group)."""
        unique = list(dict.fromkeys(texts))
        vectors = np.asarray(self.embed(unique))
        if vectors.ndim != 2 or vectors.shape[0] != len(unique):
            raise ValueError(f"GraphReward: embed returned shape {vectors.shape} for {len(unique)} texts")
        return dict(zip(unique, vectors))
