"""BM25 lexical search and reciprocal-rank fusion, as MedRAG combines retrievers.

index = BM25Index.build([p.contents for p in passages])   # k1=0.9, b=0.4: Lucene/pyserini defaults
rows, scores = index.search("troponin myocardial infarction", k=10)
fused = reciprocal_rank_fusion([dense_ids, bm25_ids], k=5, rrf_k=60)
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
from typing import Hashable, Sequence

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)


def bm25_terms(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, underscore)."""
    return _WORD.findall(text.lower())


@dataclasses.dataclass(frozen=True)
class BM25Index:
    """An inverted index: term -> (row ids, term frequencies), plus row lengths.

    Score(q, d) = sum over query terms t of idf(t) * tf (k1 + 1) / (tf + k1 (1 - b + b |d| / avgdl)),
    idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5)) (Lucene's non-negative form).
    """

    postings: dict[str, tuple[np.ndarray, np.ndarray]]
    lengths: np.ndarray
    k1: float = 0.9
    b: float = 0.4

    @classmethod
    def build(cls, texts: Sequence[str], *, k1: float = 0.9, b: float = 0.4) -> BM25Index:
        rows: dict[str, list[int]] = collections.defaultdict(list)
        freqs: dict[str, list[int]] = collections.defaultdict(list)
        lengths = np.zeros(len(texts), np.float32)
        for row, text in enumerate(texts):
            terms = collections.Counter(bm25_terms(text))
            lengths[row] = sum(terms.values())
            for term, tf in terms.items():
                rows[term].append(row)
                freqs[term].append(tf)
        postings = {t: (np.asarray(rows[t], np.int64), np.asarray(freqs[t], np.float32)) for t in rows}
        return cls(postings=postings, lengths=lengths, k1=k1, b=b)

    @property
    def num_rows(self) -> int:
        return len(self.lengths)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every row [N] for one query (repeated query terms count once, as Lucene)."""
        out = np.zeros(self.num_rows, np.float32)
        avgdl = float(self.lengths.mean()) if self.num_rows else 0.0
        for term in dict.fromkeys(bm25_terms(query)):
            if term not in self.postings:
                continue
            rows, tf = self.postings[term]
            idf = math.log(1 + (self.num_rows - len(rows) + 0.5) / (len(rows) + 0.5))
            norm = self.k1 * (1 - self.b + self.b * self.lengths[rows] / avgdl)
            out[rows] += idf * tf * (self.k1 + 1) / (tf + norm)
        return out

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (row ids, scores), best first; ties broken by lower row id."""
        scores = self.scores(query)
        k = min(k, self.num_rows)
        order = np.lexsort((np.arange(self.num_rows), -scores))[:k]
        return order, scores[order]


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[Hashable]], *, k: int, rrf_k: float = 60.0
) -> list[tuple[Hashable, float]]:
    """Fuse ranked id lists: score(id) = sum over lists of 1 / (rrf_k + rank + 1), rank from 0.

    Returns the top-k (id, score) pairs. Ties keep the order in which ids were first seen
    (list by list), so fusion is deterministic.
    """
    scores: dict[Hashable, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking):
            scores[item] = scores.get(item, 0.0) + 1.0 / (rrf_k + rank + 1)
    return sorted(scores.items(), key=lambda pair: -pair[1])[:k]
