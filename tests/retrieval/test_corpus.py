"""MedCorp chunk files as MedRAG writes them, malformed input, and the token-window chunker."""

from __future__ import annotations

import json
import os

import pytest
import tokenizers

from medr3_jax import assets
from medr3_jax.retrieval.corpus import CorpusError, Passage, chunk_text, medrag_contents, read_chunks, write_chunks


def test_medrag_contents_rule():
    assert (
        medrag_contents(" Anatomy_Gray ", " The heart has four chambers. ")
        == "Anatomy_Gray. The heart has four chambers."
    )
    assert medrag_contents("Is aspirin useful?", "Yes.") == "Is aspirin useful? Yes."
    assert medrag_contents("", "Only content.") == "Only content."


def test_reads_many_files_as_released(tmp_path):
    """MedRAG's own format: default json.dumps (ASCII escapes), "\\n"-joined, no trailing newline."""
    book = [
        Passage(
            f"Anatomy_Gray_{i}", "Anatomy_Gray", f"chunk {i} – μ", medrag_contents("Anatomy_Gray", f"chunk {i} – μ")
        )
        for i in range(3)
    ]
    pubmed = [Passage("PMID:123", "Troponin in MI.", "Abstract.", medrag_contents("Troponin in MI.", "Abstract."))]
    (tmp_path / "textbooks" / "chunk").mkdir(parents=True)
    (tmp_path / "pubmed" / "chunk").mkdir(parents=True)
    write_chunks(book, str(tmp_path / "textbooks" / "chunk" / "Anatomy_Gray.jsonl"))
    write_chunks(pubmed, str(tmp_path / "pubmed" / "chunk" / "pubmed23n0001.jsonl"))
    raw = (tmp_path / "textbooks" / "chunk" / "Anatomy_Gray.jsonl").read_bytes()
    assert not raw.endswith(b"\n") and b"\\u2013" in raw  # as released
    got = list(read_chunks([str(tmp_path / "pubmed"), str(tmp_path / "textbooks")]))
    assert got == pubmed + book
    assert got[0].contents == "Troponin in MI. Abstract."


def test_contents_is_derived_when_absent(tmp_path):
    file = tmp_path / "a.jsonl"
    file.write_text(json.dumps({"id": "x_0", "title": "Heart", "content": "Four chambers."}))
    assert next(read_chunks([str(file)])).contents == "Heart. Four chambers."


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "a", "title": "t", "content": ', r"b\.jsonl:2: not valid JSON"),
        ('{"id": "a", "title": "t"}', r"b\.jsonl:2: field 'content' missing"),
        ("[1, 2]", r"b\.jsonl:2: expected a JSON object"),
        ("", r"b\.jsonl:2: empty line"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, line, message):
    file = tmp_path / "b.jsonl"
    file.write_text(
        json.dumps({"id": "ok", "title": "t", "content": "c"})
        + "\n"
        + line
        + "\n"
        + json.dumps({"id": "z", "title": "t", "content": "c"})
    )
    with pytest.raises(CorpusError, match=message):
        list(read_chunks([str(file)]))


def test_missing_path_and_empty_directory(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        list(read_chunks([str(tmp_path / "nope")]))
    with pytest.raises(CorpusError, match="no \\*.jsonl"):
        list(read_chunks([str(tmp_path)]))


def test_chunker_windows_and_overlap():
    tok = tokenizers.Tokenizer.from_file(os.path.join(assets.minilm_dir(), "tokenizer.json"))
    assert tok.truncation is not None and tok.padding is not None  # as shipped: the chunker must undo both
    words = [f"w{i}" for i in range(10)]  # WordPiece: "w", "##0" ... two tokens per word
    text = " ".join(words)
    plain = tokenizers.Tokenizer.from_str(tok.to_str())
    plain.no_padding()
    assert len(plain.encode(text, add_special_tokens=False).ids) == 20
    long_text = " ".join(["heart"] * 300)  # beyond the shipped truncation at 128
    assert "".join(chunk_text(long_text, tok, window=100, overlap=0)).count("heart") == 300
    chunks = chunk_text(text, tok, window=8, overlap=2)
    # starts at tokens 0, 6, 12 (window 8, stride 6); the last window ends at token 20.
    assert chunks == ["w0 w1 w2 w3", "w3 w4 w5 w6", "w6 w7 w8 w9"]
    with pytest.raises(ValueError, match="overlap"):
        chunk_text(text, tok, window=4, overlap=4)
