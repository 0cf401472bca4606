"""BM25 (bm25s) against Lucene's formula written out in numpy over the same analysed terms, on
hand-made documents and on the bundled sample corpus; the analysis against Anserini's own
expectations for Lucene's English analyzer; save/load/open; RRF against hand-worked numbers."""

from __future__ import annotations

import os

import numpy as np
import pytest

from medr3_jax import assets
from medr3_jax.retrieval.bm25 import BM25_DIR, BM25Index, _top_k, reciprocal_rank_fusion
from medr3_jax.retrieval.corpus import read_chunks

DOCS = [
    "Troponin I rises within hours of myocardial infarction.",
    "Myocardial infarction: ST elevation, troponin, and chest pain; troponin peaks later.",
    "Metformin lowers hepatic glucose output in type 2 diabetes.",
    "Chest pain has many causes, including pericarditis.",
    "",
]


def lucene_bm25(index: BM25Index, docs: list[str], query: str, k1: float = 0.9, b: float = 0.4) -> np.ndarray:
    """Lucene's BM25 (as pyserini scores: no (k1 + 1) factor), each query term counted as often
    as it occurs (Anserini's BagOfWordsQueryGenerator boosts a term by its count), over a dense
    term-frequency matrix of the index's own analysed terms."""
    terms = [index.terms(d) for d in docs]
    vocab = sorted({t for ts in terms for t in ts})
    column = {v: j for j, v in enumerate(vocab)}
    tf = np.zeros((len(docs), len(vocab)))
    for i, ts in enumerate(terms):
        for t in ts:
            tf[i, column[t]] += 1
    lengths = tf.sum(1)
    df = (tf > 0).sum(0)
    idf = np.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
    out = np.zeros(len(docs))
    for q in index.terms(query):
        if q in column:
            j = column[q]
            out += idf[j] * tf[:, j] / (tf[:, j] + k1 * (1 - b + b * lengths / lengths.mean()))
    return out


def test_analysis_is_lucene_english():
    index = BM25Index.build(DOCS)
    # Anserini's BagOfWordsQueryGeneratorTest with Lucene's EnglishAnalyzer (Porter stems, its stop list)
    assert index.terms("sample query") == ["sampl", "queri"]
    assert sorted(index.terms("Mary had a little lamb")) == sorted(["lamb", "mari", "had", "littl"])
    assert index.terms("The troponin of THE patients") == ["troponin", "patient"]


@pytest.mark.parametrize("query", ["troponin myocardial infarction", "chest pain chest", "insulin", "TYPE 2 Diabetes"])
def test_scores_equal_the_lucene_formula(query):
    index = BM25Index.build(DOCS)
    np.testing.assert_allclose(index.scores(query), lucene_bm25(index, DOCS, query), rtol=1e-5, atol=1e-6)


def test_search_orders_by_score_then_row():
    index = BM25Index.build(DOCS)
    rows, scores = index.search(["troponin", "insulin"], k=3)
    assert rows[0].tolist()[:2] == [1, 0]  # two mentions beat one despite the longer document
    assert scores[0, 0] > scores[0, 1] > 0 and scores[0, 2] == 0
    assert rows[0, 2] == 2  # a zero-score tie goes to the lowest row id
    assert rows[1].tolist() == [0, 1, 2] and not scores[1].any()  # no known term: rows in order


@pytest.mark.parametrize(
    "n,k,block,levels",
    [
        (10_000, 5, 64, 7),
        (10_000, 10, 64, 10_000),
        (1_000, 50, 16, 3),
        (100, 5, 2048, 4),
        (130, 17, 16, 2),
        (7, 7, 4, 3),
        (9, 3, 4, 1),
    ],
)
def test_top_k_equals_a_full_sort_with_ties_to_the_lower_row(n, k, block, levels):
    """The block-maximum select against a full lexsort, with few distinct scores (BM25 over
    equal-length passages has many ties) and with nearly all distinct."""
    rng = np.random.default_rng(n + k + levels)
    for _ in range(20):
        scores = rng.integers(0, levels, n).astype(np.float32) * 0.25
        expected = np.lexsort((np.arange(n), -scores))[:k]
        rows, got = _top_k(scores, k, block=block)
        np.testing.assert_array_equal(rows, expected)
        np.testing.assert_array_equal(got, scores[expected])


def test_sample_corpus_rankings_agree_with_the_formula():
    docs = [p.contents for p in read_chunks([assets.sample_corpus_dir()])]
    index = BM25Index.build(docs)
    queries = ["troponin myocardial infarction", "insulin resistance type 2 diabetes", "vitamin C deficiency scurvy",
               "asthma inhaled corticosteroids children", "sepsis lactate fluid resuscitation"]  # fmt: skip
    rows, scores = index.search(queries, k=10)
    for q, got_rows, got_scores in zip(queries, rows, scores):
        want = lucene_bm25(index, docs, q)
        np.testing.assert_allclose(index.scores(q), want, rtol=1e-5, atol=1e-6)
        want_rows = np.lexsort((np.arange(len(docs)), -want.astype(np.float32)))[:10]
        assert got_rows.tolist() == want_rows.tolist(), q
        assert got_scores[0] > 0, q


def test_saved_index_loads_memory_mapped_and_open_builds_once(tmp_path):
    calls = []

    def texts():
        calls.append(1)
        return iter(DOCS)

    first = BM25Index.open(str(tmp_path), texts)
    second = BM25Index.open(str(tmp_path), texts)
    assert calls == [1] and os.path.isdir(tmp_path / BM25_DIR)
    assert isinstance(second.model.scores["data"], np.memmap)
    for q in ("troponin", "chest pain"):
        np.testing.assert_array_equal(first.search([q], 5)[0], second.search([q], 5)[0])
        np.testing.assert_allclose(second.scores(q), lucene_bm25(second, DOCS, q), rtol=1e-5, atol=1e-6)
    changed = BM25Index.open(str(tmp_path), texts, k1=1.2, b=0.75)  # other parameters: rebuilt
    assert calls == [1, 1] and changed.k1 == 1.2
    np.testing.assert_allclose(changed.scores("troponin"), lucene_bm25(changed, DOCS, "troponin", 1.2, 0.75), rtol=1e-5)


def test_reciprocal_rank_fusion_hand_worked():
    # a: 1/61 + 1/62; b: 1/62 + 1/61; c: 1/63; d: 1/63 -> a, b tie (a seen first), then c, d.
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "a", "d"]], k=4, rrf_k=60)
    assert [item for item, _ in fused] == ["a", "b", "c", "d"]
    np.testing.assert_allclose([score for _, score in fused], [1 / 61 + 1 / 62, 1 / 62 + 1 / 61, 1 / 63, 1 / 63])
    assert reciprocal_rank_fusion([["x", "y"], ["y"]], k=1, rrf_k=1) == [("y", 1 / 3 + 1 / 2)]  # beats x's 1/2
