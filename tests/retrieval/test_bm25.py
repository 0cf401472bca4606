"""BM25 against the formula computed densely by hand in numpy; RRF against hand-worked numbers."""

from __future__ import annotations

import numpy as np
import pytest

from medr3_jax.retrieval.bm25 import BM25Index, bm25_terms, reciprocal_rank_fusion

DOCS = [
    "Troponin I rises within hours of myocardial infarction.",
    "Myocardial infarction: ST elevation, troponin, and chest pain; troponin peaks later.",
    "Metformin lowers hepatic glucose output in type 2 diabetes.",
    "Chest pain has many causes, including pericarditis.",
    "",
]


def dense_bm25(docs: list[str], query: str, k1: float, b: float) -> np.ndarray:
    """The textbook formula over a dense term-frequency matrix."""
    terms = [bm25_terms(d) for d in docs]
    vocab = sorted({t for ts in terms for t in ts})
    tf = np.array([[ts.count(v) for v in vocab] for ts in terms], np.float64)
    lengths = tf.sum(1)
    df = (tf > 0).sum(0)
    idf = np.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
    out = np.zeros(len(docs))
    for q in set(bm25_terms(query)):
        if q in vocab:
            j = vocab.index(q)
            out += idf[j] * tf[:, j] * (k1 + 1) / (tf[:, j] + k1 * (1 - b + b * lengths / lengths.mean()))
    return out


@pytest.mark.parametrize("query", ["troponin myocardial infarction", "chest pain chest", "insulin", "TYPE 2 Diabetes"])
def test_scores_equal_the_dense_formula(query):
    index = BM25Index.build(DOCS)
    np.testing.assert_allclose(index.scores(query), dense_bm25(DOCS, query, 0.9, 0.4), rtol=1e-5, atol=1e-6)


def test_search_orders_by_score_then_row():
    index = BM25Index.build(DOCS)
    rows, scores = index.search("troponin", k=3)
    assert rows.tolist()[:2] == [1, 0]  # two mentions beat one despite the longer document
    assert scores[0] > scores[1] > 0 and scores[2] == 0
    assert rows[2] == 2  # a zero-score tie goes to the lowest row id


def test_reciprocal_rank_fusion_hand_worked():
    # a: 1/61 + 1/62; b: 1/62 + 1/61; c: 1/63; d: 1/63 -> a, b tie (a seen first), then c, d.
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "a", "d"]], k=4, rrf_k=60)
    assert [item for item, _ in fused] == ["a", "b", "c", "d"]
    np.testing.assert_allclose([score for _, score in fused], [1 / 61 + 1 / 62, 1 / 62 + 1 / 61, 1 / 63, 1 / 63])
    assert reciprocal_rank_fusion([["x", "y"], ["y"]], k=1, rrf_k=1) == [("y", 1 / 3 + 1 / 2)]  # beats x's 1/2
