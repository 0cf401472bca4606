"""BM25 lexical search on `bm25s` (scores precomputed into a sparse matrix, saved once into the
index directory and loaded memory-mapped), and reciprocal-rank fusion, as MedRAG combines
retrievers.

    index = BM25Index.build(texts)                   # or BM25Index.open(index_dir, store.iter_contents)
    rows, scores = index.search(["troponin myocardial infarction"], k=10)
    fused = reciprocal_rank_fusion([dense_ids, bm25_ids], k=5, rrf_k=60)

As MedRAG searches (its `Retriever` in src/utils.py: pyserini's `LuceneSearcher` with its defaults
over the chunks' `contents`): k1 0.9, b 0.4, Lucene's scoring
    score(q, d) = sum over query terms t (with their count in q) of
                  idf(t) * tf / (tf + k1 (1 - b + b |d| / avgdl)),  idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5)),
and an analysis close to Lucene's EnglishAnalyzer: lower-cased word tokens, Lucene's 33 English
stop words, the Porter stemmer (PyStemmer). Lucene's StandardTokenizer splits a few strings
(hyphens, apostrophes) differently, so ranks agree closely with pyserini's, not exactly.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Callable, Hashable, Iterable, Sequence

import numpy as np

from medr3_jax.progress import waiting

log = logging.getLogger("medr3_jax.retrieval")

BM25_DIR = "bm25"
# org.apache.lucene.analysis.en.EnglishAnalyzer.ENGLISH_STOP_WORDS_SET
LUCENE_STOP_WORDS = (
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not",
    "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was",
    "will", "with",
)  # fmt: skip
TOKEN_PATTERN = r"(?u)\b\w+\b"
SETTINGS_FILE = "medr3_bm25.json"


class BM25Index:
    """A bm25s index with this module's analysis; `search` breaks score ties by the lower row."""

    def __init__(self, model, *, k1: float, b: float):
        import Stemmer  # noqa: PLC0415 (PyStemmer)

        self.model, self.k1, self.b = model, k1, b
        self._stemmer = Stemmer.Stemmer("porter")

    def terms(self, text: str) -> list[str]:
        """The analysed terms of a text, in order (stems of the non-stop-word tokens)."""
        return _tokenize([text], self._stemmer)[0]

    @classmethod
    def build(cls, texts: Iterable[str], *, k1: float = 0.9, b: float = 0.4) -> BM25Index:
        import bm25s  # noqa: PLC0415
        import Stemmer  # noqa: PLC0415

        model = bm25s.BM25(k1=k1, b=b, method="lucene")
        model.index(_tokenize(texts, Stemmer.Stemmer("porter")), show_progress=False)
        return cls(model, k1=k1, b=b)

    def save(self, directory: str) -> None:
        """Into `directory` (replaced whole, through a temporary sibling: never half written)."""
        tmp = f"{directory}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save(tmp, show_progress=False)
        with open(os.path.join(tmp, SETTINGS_FILE), "w", encoding="utf-8") as fh:
            json.dump(_settings(self.k1, self.b), fh)
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(tmp, directory)

    @classmethod
    def load(cls, directory: str) -> BM25Index:
        """Memory-mapped: the score matrix stays on disk until a query touches it."""
        import bm25s  # noqa: PLC0415

        with open(os.path.join(directory, SETTINGS_FILE), encoding="utf-8") as fh:
            settings = json.load(fh)
        model = bm25s.BM25.load(directory, mmap=True, show_progress=False)
        return cls(model, k1=settings["k1"], b=settings["b"])

    @classmethod
    def open(cls, index_dir: str, texts: Callable[[], Iterable[str]], *, k1: float = 0.9, b: float = 0.4,
             cache_dir: str | None = None) -> BM25Index:  # fmt: skip
        """The index saved in `<index_dir>/bm25`, built from `texts()` the first time (the
        passages' contents in row order). A read-only index directory keeps it in `cache_dir`."""
        directory = os.path.join(index_dir, BM25_DIR)
        if not _matches(directory, k1, b) and cache_dir is not None and not os.access(index_dir, os.W_OK):
            directory = cache_dir
        if _matches(directory, k1, b):
            return cls.load(directory)
        log.info("building the BM25 index into %s (once)", directory)
        with waiting(f"building the BM25 index into {directory}"):
            index = cls.build(texts(), k1=k1, b=b)
            index.save(directory)
        return cls.load(directory)

    @property
    def num_rows(self) -> int:
        return int(self.model.scores["num_docs"])

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every row [N] for one query."""
        ids = [self.model.vocab_dict[t] for t in self.terms(query) if t in self.model.vocab_dict]
        if not ids:
            return np.zeros(self.num_rows, np.float32)
        return np.asarray(self.model.get_scores_from_ids(ids), np.float32)

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows [Q, k] and scores [Q, k] per query, best first, ties to the lower row."""
        k = min(k, self.num_rows)
        out = [_top_k(self.scores(q), k) for q in queries]
        return (np.stack([r for r, _ in out]) if out else np.zeros((0, k), np.int64),
                np.stack([s for _, s in out]) if out else np.zeros((0, k), np.float32))  # fmt: skip


def _settings(k1: float, b: float) -> dict:
    return {"k1": k1, "b": b, "method": "lucene", "stemmer": "porter", "stopwords": "lucene_english",
            "token_pattern": TOKEN_PATTERN}  # fmt: skip


def _matches(directory: str, k1: float, b: float) -> bool:
    path = os.path.join(directory, SETTINGS_FILE)
    if not os.path.exists(path):
        return False
    with open(path, encoding="utf-8") as fh:
        return json.load(fh) == _settings(k1, b)


def _tokenize(texts: Iterable[str], stemmer) -> list[list[str]]:
    import bm25s  # noqa: PLC0415

    texts = list(texts)
    if not texts:
        return []
    return bm25s.tokenize(texts, lower=True, token_pattern=TOKEN_PATTERN, stopwords=list(LUCENE_STOP_WORDS),
                          stemmer=stemmer, return_ids=False, show_progress=False)  # fmt: skip


def _top_k(scores: np.ndarray, k: int, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """The k best rows, by score then lower row, without sorting all N.

    Candidates first: the blocks of `block` rows whose maximum is at least the k-th largest block
    maximum. The k-th best score is at least that (the k best blocks' maxima are k rows), so
    every row scoring at least the k-th best, ties included, lies in a candidate block; the exact
    top-k is then taken over those rows alone. (A select over all N with np.partition is ~100 ms
    at 2M rows with BM25's many tied scores; this is ~1 ms.)
    """
    n = len(scores)
    if k >= n:
        rows = np.arange(n)
    else:
        maxima = np.pad(scores, (0, (-n) % block), constant_values=-np.inf).reshape(-1, block).max(axis=1)
        top = min(k, len(maxima))
        floor = -np.partition(-maxima, top - 1)[top - 1]  # the top-th largest block maximum
        starts = np.flatnonzero(maxima >= floor) * block
        candidates = (starts[:, None] + np.arange(block)[None]).ravel()
        candidates = candidates[candidates < n]  # ascending rows
        values = scores[candidates]
        kth = -np.partition(-values, k - 1)[k - 1]  # the k-th best score
        above = candidates[values > kth]
        rows = np.concatenate([above, candidates[values == kth][: k - len(above)]])  # ties: lower rows
    rows = rows[np.lexsort((rows, -scores[rows]))]
    return rows.astype(np.int64), scores[rows].astype(np.float32)


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
