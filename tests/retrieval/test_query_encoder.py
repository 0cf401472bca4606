"""Separate query and passage encoders (MedCPT's pair) and named encoder styles: the Retriever
encodes queries with the manifest's query encoder and style, and its top-k equals numpy brute
force over the stored table with those query vectors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from medr3_jax import assets
from medr3_jax.models.encoder import encoder_inputs, load_encoder, load_encoder_tokenizer
from medr3_jax.retrieval.corpus import Passage, medrag_contents, write_chunks
from medr3_jax.retrieval.embed import EmbedSettings, embed_corpus, main
from medr3_jax.retrieval.retriever import Retriever
from tests.retrieval.test_retriever import FACTS

QUERIES = ["What marker confirms a heart attack?", "Which vitamin prevents scurvy?", "acid-fast bacillus"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("qenc")
    passages = [Passage(f"P{i}", t, c, medrag_contents(t, c)) for i, (t, c) in enumerate(FACTS)]
    write_chunks(passages, str(root / "facts.jsonl"))
    # A second, different "query encoder": MiniLM's weights with CLS pooling instead of mean.
    query_dir = root / "query_encoder"
    shutil.copytree(assets.minilm_dir(), query_dir)
    (query_dir / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    return root


def _vectors(encoder_dir, texts, max_len, **overrides):
    encoder = load_encoder(str(encoder_dir), **overrides)
    tokens, mask = encoder_inputs(load_encoder_tokenizer(str(encoder_dir)), texts, max_len=max_len)
    return np.asarray(encoder.embed(tokens, mask))


def _table(index_dir):
    manifest = json.loads((index_dir / "manifest.json").read_text())
    return np.concatenate([np.load(index_dir / s["table"]) for s in manifest["shards"]]).astype(np.float32)


def test_queries_go_through_the_separate_query_encoder(corpus):
    out = corpus / "pair"
    settings = EmbedSettings(shard_rows=4, batch_size=4, max_len=48, query_max_len=16)
    manifest = embed_corpus([str(corpus / "facts.jsonl")], assets.minilm_dir(), str(out), settings=settings,
                            query_encoder_dir=str(corpus / "query_encoder"))  # fmt: skip
    assert manifest.query_encoder == str(corpus / "query_encoder")
    retriever = Retriever(str(out), backend="exact")
    got = retriever.encode_queries(QUERIES)
    want = _vectors(corpus / "query_encoder", QUERIES, 16)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(got - _vectors(assets.minilm_dir(), QUERIES, 16)).max() > 1e-2  # not the passage encoder
    ids, scores = retriever.search(QUERIES, k=3)
    table = _table(out)
    order = np.argsort(-(want @ table.T), axis=1)[:, :3]
    assert ids == [[f"P{r}" for r in row] for row in order]
    np.testing.assert_allclose(scores, np.take_along_axis(want @ table.T, order, axis=1), rtol=1e-4, atol=1e-5)


def test_medcpt_style_pools_cls_without_normalising(corpus):
    out = corpus / "medcpt"
    assert main(["--corpus", str(corpus / "facts.jsonl"), "--out", str(out), "--style", "medcpt", "--max_len", "48",
                 "--batch_size", "8", "--dtype", "float16"]) == 0  # fmt: skip
    table = _table(out)
    texts = [medrag_contents(t, c) for t, c in FACTS]
    want = _vectors(assets.minilm_dir(), texts, 48, pooling="cls", normalize=False)
    np.testing.assert_allclose(table, want, rtol=2e-3, atol=2e-3)  # stored as float16
    assert np.abs(np.linalg.norm(table, axis=1) - 1).max() > 0.1  # MedCPT vectors are not unit length
    retriever = Retriever(str(out), backend="exact")
    np.testing.assert_allclose(retriever.encode_queries(QUERIES), _vectors(assets.minilm_dir(), QUERIES, 48,
                               pooling="cls", normalize=False), atol=1e-5)  # fmt: skip
