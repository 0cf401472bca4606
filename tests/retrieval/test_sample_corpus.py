"""The bundled sample corpus and questions agree: every question's evidence is retrievable.

Figure (MiniLM, exact search, query = question text only): the share of the 60 sample
questions with a gold passage in the top 5. Measured 57/60 when written; we require >= 0.9.
"""

import pytest

from medr3_jax import assets
from medr3_jax.data.datasets import load_records
from medr3_jax.retrieval.corpus import read_chunks
from medr3_jax.retrieval.retriever import Retriever

SPLITS = {"medqa": ("train", "dev", "test"), "medmcqa": ("train", "dev"), "pubmedqa": ("train", "test"),
          "mmlu_med": ("dev", "test"), "bioasq": ("test",)}  # fmt: skip


@pytest.fixture(scope="module")
def questions(sample_data_dir):
    return [r for name, splits in SPLITS.items() for s in splits for r in load_records(name, s, sample_data_dir)]


@pytest.mark.parametrize("backend", ["exact", "fusion"])
def test_evidence_in_top5(sample_index_dir, questions, backend):
    retriever = Retriever(sample_index_dir, backend=backend)
    ids, _ = retriever.search([q.question for q in questions], k=5)
    hits = [bool(set(q.evidence_ids) & set(got)) for q, got in zip(questions, ids)]
    print(f"{backend}: evidence in top 5 for {sum(hits)}/{len(hits)} sample questions")
    assert sum(hits) / len(hits) >= 0.9


def test_passage_store_holds_policy_tokens(sample_index_dir, smollm2_tokenizer):
    retriever = Retriever(sample_index_dir, backend="bm25")
    passages = list(read_chunks([assets.sample_corpus_dir()]))
    assert retriever.store.ids(range(len(retriever))) == [p.id for p in passages]
    first = passages[0]
    tokens = retriever.passage_tokens([first.id])[0]
    assert smollm2_tokenizer.decode(tokens) == smollm2_tokenizer.decode(smollm2_tokenizer.encode(first.contents)[:256])
