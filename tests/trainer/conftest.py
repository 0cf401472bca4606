"""Shared by the train-loop tests: a small byte-token index and one uninterrupted CLI run that
the kill -9 and the two-process tests both compare against."""

import pytest

from medr3_jax import assets
from medr3_jax.models.tokenizers import byte_tokenizer
from medr3_jax.retrieval.corpus import read_chunks, write_chunks
from medr3_jax.retrieval.embed import EmbedSettings, embed_corpus
from tests.trainer.train_cli import start_one_process


@pytest.fixture(scope="session")
def byte_index(tmp_path_factory):
    """40 sample passages embedded with MiniLM, passage store in byte tokens (the tiny policy)."""
    root = tmp_path_factory.mktemp("byte_index")
    passages = list(read_chunks([assets.sample_corpus_dir()]))[:40]
    write_chunks(passages, str(root / "corpus.jsonl"))
    settings = EmbedSettings(batch_size=16, max_len=128, passage_tokens=96)
    embed_corpus([str(root / "corpus.jsonl")], assets.minilm_dir(), str(root / "index"), settings=settings,
                 policy_tokenizer=byte_tokenizer())  # fmt: skip
    return str(root / "index")


@pytest.fixture(scope="session")
def one_process_run(tmp_path_factory, sample_data_dir, byte_index):
    """`python -m medr3_jax.train` (tiny stage 3), 3 steps straight, one process with two devices."""
    workdir = tmp_path_factory.mktemp("one_process") / "run"
    proc = start_one_process(workdir, sample_data_dir, byte_index, 3)
    log = proc.communicate(timeout=600)[1]
    assert proc.returncode == 0, log[-3000:]
    return workdir
