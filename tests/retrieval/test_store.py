"""The index directory read by random access (retrieval.store): every row's passage, id and
policy tokens equal the corpus and the tokenizer; opening parses no passage; an index written
before the random-access files is upgraded in place to the same answers; two processes
embedding the corpus write the files of one process, byte for byte."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from medr3_jax import assets
from medr3_jax.models.tokenizers import byte_tokenizer
from medr3_jax.retrieval import store as store_module
from medr3_jax.retrieval.corpus import Passage, medrag_contents, read_chunks, write_chunks
from medr3_jax.retrieval.embed import EmbedSettings, embed_corpus
from medr3_jax.retrieval.retriever import Retriever
from medr3_jax.retrieval.store import ID_INDEX, MANIFEST, IndexManifest, PassageStore

SETTINGS = EmbedSettings(shard_rows=8, batch_size=8, max_len=32, passage_tokens=24)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    """Two chunk files, 43 passages (shards of 8: the last one short), ids of varying width
    and non-ASCII text."""
    root = tmp_path_factory.mktemp("store_corpus")
    topics = ["troponin", "insulin", "scurvy", "asthma", "sepsis", "β-blockers"]
    for f, count in ((0, 30), (1, 13)):
        passages = []
        for i in range(count):
            title = f"Book{f}"
            content = f"Passage {i} on {topics[i % 6]}: clinical care number {i * 7 + f}."
            passages.append(Passage(f"Book{f}_{i}" + "x" * (i % 3), title, content, medrag_contents(title, content)))
        write_chunks(passages, str(root / f"book{f}.jsonl"))
    return str(root)


@pytest.fixture(scope="module")
def index(corpus, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("store_index") / "index")
    embed_corpus([corpus], assets.minilm_dir(), out, settings=SETTINGS, policy_tokenizer=byte_tokenizer())
    return out


def test_every_row_reads_back_its_passage_id_and_tokens(corpus, index):
    passages = list(read_chunks([corpus]))
    manifest = IndexManifest.read(index)
    store = PassageStore.open(index, manifest)
    assert len(store) == len(passages) == 43 and manifest.format == store_module.FORMAT
    assert store.ids(range(43)) == [p.id for p in passages]
    for row in (0, 7, 8, 29, 30, 42):  # shard edges and the short last shard
        got = store.passage(row)
        assert (got.id, got.title, got.contents) == (passages[row].id, passages[row].title, passages[row].contents)
    shuffled = [passages[r].id for r in (42, 3, 17, 30, 0)]
    assert store.rows(shuffled) == [42, 3, 17, 30, 0]
    tok = byte_tokenizer()
    assert store.tokens([5, 40]) == [tok.encode(passages[r].contents)[:24] for r in (5, 40)]
    with pytest.raises(KeyError, match="no passage with id 'Book0_99'"):
        store.rows(["Book0_99"])
    with pytest.raises(KeyError, match="no passage"):
        store.rows(["Book0_1xx" + "y" * 40])  # longer than any stored id: not cut down to a stored one
    with pytest.raises(IndexError, match="row 43 outside"):
        store.passage(43)


def test_opening_parses_no_passage(index, monkeypatch):
    manifest = IndexManifest.read(index)
    calls = []
    real = json.loads
    monkeypatch.setattr(json, "loads", lambda *a, **k: calls.append(1) or real(*a, **k))
    store = PassageStore.open(index, manifest)
    assert calls == []
    store.passage(12)
    assert calls == [1]  # one line parsed for one passage


def _downgrade(src: str, dst: str) -> None:
    """`src` as the embed of format 1 wrote it: no offsets/ids files, no id index, passage lines
    joined without a trailing newline, a manifest without 'format'."""
    shutil.copytree(src, dst)
    root = pathlib.Path(dst)
    for path in root.iterdir():
        if path.name.startswith(("offsets_", "ids_")) or path.name in ID_INDEX:
            path.unlink()
        if path.name.startswith("passages_"):
            path.write_text(path.read_text(encoding="utf-8").rstrip("\n"), encoding="utf-8")
    meta = json.loads((root / MANIFEST).read_text())
    del meta["format"]
    (root / MANIFEST).write_text(json.dumps(meta))


def test_a_format_1_index_is_upgraded_to_the_same_answers(index, tmp_path):
    old = str(tmp_path / "old")
    _downgrade(index, old)
    assert IndexManifest.read(old).format == 1
    queries = ["troponin care", "β-blockers passage 5"]
    want_ids, want_scores = Retriever(index, backend="exact").search(queries, 4)
    retriever = Retriever(old, backend="exact")
    assert retriever.manifest.format == store_module.FORMAT == IndexManifest.read(old).format
    got_ids, got_scores = retriever.search(queries, 4)
    assert got_ids == want_ids
    np.testing.assert_array_equal(got_scores, want_scores)
    for name in sorted(os.listdir(index)):  # the derived files equal what embed writes today
        if name.startswith("ids_"):
            assert (tmp_path / "old" / name).read_bytes() == pathlib.Path(index, name).read_bytes(), name
        if name.startswith("offsets_"):  # the same line starts; the end is the file's size (no last newline)
            got, want = np.load(os.path.join(old, name)), np.load(os.path.join(index, name))
            np.testing.assert_array_equal(got[:-1], want[:-1])
            assert got[-1] == os.path.getsize(
                os.path.join(old, name.replace("offsets", "passages").replace(".npy", ".jsonl"))
            )
    assert retriever.passage_tokens([want_ids[0][0]]) == Retriever(index, backend="bm25").passage_tokens(
        [want_ids[0][0]]
    )


def _embed_cli(corpus: str, out: str, *process: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "medr3_jax.retrieval.embed", "--corpus", corpus, "--out", out,
            "--shard_rows", "8", "--batch_size", "8", "--max_len", "32", "--passage_tokens", "24",
            "--policy_tokenizer", assets.smollm2_gguf(), "--mesh", "data=1", *process]  # fmt: skip
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    return subprocess.Popen(args, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_processes_write_the_files_of_one_byte_for_byte(corpus, tmp_path):
    one = str(tmp_path / "one")
    two = str(tmp_path / "two")
    procs = [_embed_cli(corpus, one), *(_embed_cli(corpus, two, "--num_processes", "2", "--process_id", str(i))
                                        for i in range(2))]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(err[-2000:] for _, err in outs)
    shares = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs[1:]]
    assert sorted(s["complete"] for s in shares) in ([False, True], [True, True])  # the last one finished it
    assert "shards left" in outs[1][1] and "ETA" in outs[1][1]  # the throughput line
    names = sorted(os.listdir(one))
    assert names == sorted(os.listdir(two)) and "table_00005.npy" in names and "manifest.json" in names
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert IndexManifest.read(two).complete and IndexManifest.read(two).count == 43


def test_a_process_id_outside_the_count_is_refused(corpus, tmp_path):
    with pytest.raises(ValueError, match="process 2 of 2"):
        embed_corpus([corpus], assets.minilm_dir(), str(tmp_path / "x"), settings=SETTINGS, process_index=2,
                     process_count=2)  # fmt: skip


def test_a_format_1_index_that_cannot_be_upgraded_says_why(index, tmp_path, monkeypatch):
    old = str(tmp_path / "old")
    _downgrade(index, old)

    def read_only(path, write):
        raise PermissionError(13, "Permission denied", path)  # what a read-only mount answers

    monkeypatch.setattr(store_module, "atomic_write", read_only)
    with pytest.raises(OSError, match="format 1.*gets them on first open.*Permission denied.*writable copy"):
        Retriever(old, backend="bm25")
