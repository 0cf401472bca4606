"""Retrieval over the medical corpus. So far: the corpus reader and chunker, BM25 with
reciprocal-rank fusion, exact on-device top-k over a row-sharded embedding table, and ScaNN."""

from medr3_jax.retrieval.bm25 import BM25Index, reciprocal_rank_fusion
from medr3_jax.retrieval.corpus import CorpusError, Passage, chunk_text, medrag_contents, read_chunks, write_chunks
from medr3_jax.retrieval.exact import ExactIndex
from medr3_jax.retrieval.scann_index import ScannConfig, ScannIndex

__all__ = [
    "BM25Index",
    "reciprocal_rank_fusion",
    "CorpusError",
    "ExactIndex",
    "Passage",
    "chunk_text",
    "medrag_contents",
    "read_chunks",
    "ScannConfig",
    "ScannIndex",
    "write_chunks",
]
