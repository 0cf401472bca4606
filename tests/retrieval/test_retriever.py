"""Retriever over an embed-built index: exact and ScaNN equal numpy brute force on the stored
table, BM25 and fusion find the lexical match, passage tokens come from the store; the CLI."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest

from medr3_jax import assets
from medr3_jax.models.tokenizers import byte_tokenizer
from medr3_jax.retrieval.corpus import Passage, medrag_contents, write_chunks
from medr3_jax.retrieval.embed import EmbedSettings, embed_corpus
from medr3_jax.retrieval.retriever import Retriever
from medr3_jax.retrieval.search import main as search_main

FACTS = [
    ("Cardiology", "Troponin I is the most specific blood marker of myocardial infarction."),
    ("Endocrinology", "Insulin is made by the beta cells of the pancreatic islets."),
    ("Nutrition", "Scurvy is caused by vitamin C deficiency and impairs collagen synthesis."),
    ("Pulmonology", "Asthma is reversible airway obstruction treated with inhaled corticosteroids."),
    ("Infectious disease", "Tuberculosis is caused by Mycobacterium tuberculosis, an acid-fast bacillus."),
    ("Neurology", "A stroke is a sudden loss of brain function from ischaemia or haemorrhage."),
]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("idx")
    passages = [Passage(f"P{i}", t, c, medrag_contents(t, c)) for i, (t, c) in enumerate(FACTS)]
    write_chunks(passages, str(root / "facts.jsonl"))
    settings = EmbedSettings(shard_rows=4, batch_size=4, max_len=48, passage_tokens=64)
    embed_corpus(
        [str(root / "facts.jsonl")],
        assets.minilm_dir(),
        str(root / "index"),
        settings=settings,
        policy_tokenizer=byte_tokenizer(),
    )
    return str(root / "index")


@pytest.mark.parametrize("backend", ["exact", "scann"])
def test_dense_backends_equal_brute_force(index_dir, backend):
    retriever = Retriever(index_dir, backend=backend)
    queries = ["What marker confirms a heart attack?", "Which vitamin prevents scurvy?"]
    ids, scores = retriever.search(queries, k=3)
    table = np.concatenate([np.load(f"{index_dir}/table_00000.npy"), np.load(f"{index_dir}/table_00001.npy")]).astype(
        np.float32
    )
    want = np.argsort(-(retriever.encode_queries(queries) @ table.T), axis=1)[:, :3]
    assert ids == [[f"P{r}" for r in row] for row in want]
    assert ids[0][0] == "P0" and ids[1][0] == "P2"  # MiniLM gets the evidence first
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_bm25_and_fusion(index_dir):
    assert Retriever(index_dir, backend="bm25").search(["mycobacterium acid-fast"], k=2)[0][0][0] == "P4"
    ids, scores = Retriever(index_dir, backend="fusion").search(["pancreatic beta cells insulin"], k=3)
    assert ids[0][0] == "P1" and scores[0, 0] == pytest.approx(2 / 61)  # rank 0 in both lists


def test_passage_tokens_come_from_the_store(index_dir):
    retriever = Retriever(index_dir, backend="bm25")
    assert retriever.passage_tokens(["P2"]) == [byte_tokenizer().encode(retriever.passage("P2").contents)[:64]]


def test_without_the_scann_package_scann_says_how_to_install_it_and_exact_works(index_dir, monkeypatch):
    """scann is an optional extra (Linux wheels only): with the module unimportable, backend='scann'
    names the extra to install, and the exact backend gives the same ids as with it."""
    expected = Retriever(index_dir, backend="exact").search(["pancreatic beta cells insulin"], k=3)[0]
    monkeypatch.setitem(sys.modules, "scann", None)  # `import scann` now raises ImportError
    with pytest.raises(ImportError, match=re.escape("pip install 'medr3_jax[scann]'")):
        Retriever(index_dir, backend="scann")
    assert Retriever(index_dir, backend="exact").search(["pancreatic beta cells insulin"], k=3)[0] == expected


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json: not an index directory"):
        Retriever(str(tmp_path))


def test_search_cli_json(index_dir, capsys):
    assert search_main(["--index", index_dir, "--k", "2", "--json", "scurvy vitamin", "troponin"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["ids"][0] for line in lines] == ["P2", "P0"] and len(lines[0]["scores"]) == 2
