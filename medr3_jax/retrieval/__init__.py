"""Retrieval over the medical corpus: the corpus reader and chunker, the index directory read by
random access (store), BM25 (bm25s) with reciprocal-rank fusion, exact on-device top-k over a
row-sharded embedding table, and ScaNN."""

from medr3_jax.retrieval.bm25 import BM25Index, reciprocal_rank_fusion
from medr3_jax.retrieval.corpus import CorpusError, Passage, chunk_text, medrag_contents, read_chunks, write_chunks
from medr3_jax.retrieval.exact import ExactIndex
from medr3_jax.retrieval.scann_index import ScannConfig, ScannIndex
from medr3_jax.retrieval.store import IndexManifest, PassageStore

__all__ = [
    "BM25Index",
    "reciprocal_rank_fusion",
    "CorpusError",
    "ExactIndex",
    "IndexManifest",
    "PassageStore",
    "Passage",
    "chunk_text",
    "medrag_contents",
    "read_chunks",
    "ScannConfig",
    "ScannIndex",
    "write_chunks",
]
