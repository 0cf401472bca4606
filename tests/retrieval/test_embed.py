"""The embed pipeline: table equals direct encoding, the manifest and passage store are right,
and an interrupted run resumes to byte-identical files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tokenizers

from medr3_jax import assets
from medr3_jax.models.encoder import encoder_inputs, load_encoder
from medr3_jax.models.tokenizers import byte_tokenizer
from medr3_jax.retrieval.corpus import Passage, medrag_contents, write_chunks
from medr3_jax.retrieval.embed import EmbedSettings, embed_corpus
from medr3_jax.retrieval.store import IndexManifest

SETTINGS = EmbedSettings(shard_rows=16, batch_size=8, max_len=32, passage_tokens=24)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    topics = ["troponin", "insulin", "scurvy", "asthma", "sepsis"]
    for f in range(2):
        passages = []
        for i in range(20):
            title = f"Book{f}"
            content = f"Passage {i} about {topics[i % 5]} and clinical care number {i * 7 + f}."
            passages.append(Passage(f"Book{f}_{i}", title, content, medrag_contents(title, content)))
        write_chunks(passages, str(root / f"book{f}.jsonl"))
    return str(root)


def _run(corpus: str, out: str, **kwargs):
    return embed_corpus(
        [corpus], assets.minilm_dir(), out, settings=SETTINGS, policy_tokenizer=byte_tokenizer(), **kwargs
    )


def test_table_manifest_and_store(corpus, tmp_path):
    manifest = _run(corpus, str(tmp_path / "a"))
    assert manifest.count == 40 and manifest.complete and manifest.dim == 384
    assert [s.rows for s in manifest.shards] == [(0, 16), (16, 32), (32, 40)]
    assert IndexManifest.read(str(tmp_path / "a")) == manifest
    table = np.concatenate([np.load(s.file(str(tmp_path / "a"), "table")) for s in manifest.shards])
    assert table.dtype == np.float16 and table.shape == (40, 384)
    texts = [
        json.loads(line)["contents"] for i in range(3) for line in open(tmp_path / "a" / f"passages_{i:05d}.jsonl")
    ]
    tok = tokenizers.Tokenizer.from_file(os.path.join(assets.minilm_dir(), "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    tokens, mask = encoder_inputs(tok, texts, max_len=32)
    want = np.asarray(load_encoder(assets.minilm_dir()).embed(tokens, mask))
    np.testing.assert_allclose(table.astype(np.float32), want, atol=2e-3)
    store = np.load(tmp_path / "a" / "tokens_00001.npy")
    lengths = np.load(tmp_path / "a" / "lengths_00001.npy")
    first = byte_tokenizer().encode(texts[16])[:24]
    assert store.shape == (16, 24) and lengths[0] == len(first) and store[0, : lengths[0]].tolist() == first


def test_interrupted_run_resumes_byte_identical(corpus, tmp_path):
    _run(corpus, str(tmp_path / "full"))
    partial = _run(corpus, str(tmp_path / "resumed"), max_shards=1)
    assert len(partial.shards) == 1 and not partial.complete
    _run(corpus, str(tmp_path / "resumed"))
    names = sorted(os.listdir(tmp_path / "full"))
    assert names == sorted(os.listdir(tmp_path / "resumed"))
    for name in names:
        assert (tmp_path / "full" / name).read_bytes() == (tmp_path / "resumed" / name).read_bytes(), name


def test_resume_with_other_settings_is_refused(corpus, tmp_path):
    _run(corpus, str(tmp_path / "x"), max_shards=1)
    with pytest.raises(ValueError, match="settings=.*use a new --out"):
        embed_corpus([corpus], assets.minilm_dir(), str(tmp_path / "x"), settings=EmbedSettings(shard_rows=8))
