"""One `Retriever` over an index directory written by `retrieval.embed`, with backends:

exact   the table sharded by rows over the mesh, query encoder on device (ExactIndex)
scann   ScaNN on the host (brute force for small tables); on several processes each indexes
        its share of the rows and the candidates are merged (HostShardedScann)
bm25    lexical BM25 over the passages' contents (bm25s, saved in the index directory)
fusion  reciprocal-rank fusion of exact and bm25 (MedRAG's RRF, `rrf_k`)

retriever = Retriever.open("index/medcorp", backend="exact")
ids, scores = retriever.search(["troponin in myocardial infarction"], k=5)
retriever.passage(ids[0][0]).contents;  retriever.passage_tokens(ids[0])   # policy tokens
retriever.store.passage(row), retriever.store.rows(ids[0])                  # by row (retrieval.store)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from typing import Literal, Sequence

import jax
import numpy as np
from flax import nnx

from medr3_jax.models.encoder import encoder_inputs, load_encoder, load_encoder_tokenizer
from medr3_jax.retrieval.bm25 import BM25Index, reciprocal_rank_fusion
from medr3_jax.retrieval.corpus import Passage
from medr3_jax.retrieval.embed import style_overrides
from medr3_jax.retrieval.exact import ExactIndex
from medr3_jax.retrieval.store import MANIFEST, IndexManifest, PassageStore

Backend = Literal["exact", "scann", "bm25", "fusion"]
# Query batches are padded to the smallest of these that holds their longest query (capped at the
# index's query_max_len): policy queries are short, and padding them to 256 made encoding 5x slower.
QUERY_BUCKETS = (16, 32, 64, 128, 256, 512)


@dataclasses.dataclass(frozen=True)
class PreparedQueries:
    """Queries ready to rank: their text and, for the dense backends, their vectors [Q, D]."""

    queries: list[str]
    vectors: np.ndarray | None


class Retriever:
    """search(queries, k) -> (passage ids [Q][k], scores [Q,k]); passage and token lookups by id.

    Opening reads the manifest and the shards' headers (`store.PassageStore`, memory-mapped),
    not the passages: O(shards). The exact backend then reads the table onto the device; scann
    builds (or loads its cached) index; bm25 loads its saved index memory-mapped (built into
    `<index_dir>/bm25` the first time)."""

    def __init__(
        self, index_dir: str, *, backend: Backend = "exact", mesh: jax.sharding.Mesh | None = None, rrf_k: float = 60.0
    ):
        if backend not in ("exact", "scann", "bm25", "fusion"):
            raise ValueError(f"backend={backend!r}; expected exact, scann, bm25 or fusion")
        manifest = IndexManifest.read(index_dir)
        if not manifest.complete:
            raise ValueError(f"{os.path.join(index_dir, MANIFEST)}: the embedding run did not finish; rerun embed "
                             "to resume it")  # fmt: skip
        self.backend, self.rrf_k, self.index_dir = backend, rrf_k, index_dir
        self.store = PassageStore.open(index_dir, manifest)
        self.manifest = self.store.manifest
        self._bm25 = self._bm25_index() if backend in ("bm25", "fusion") else None
        self._dense = self._dense_index(mesh) if backend != "bm25" else None

    def __len__(self) -> int:
        return len(self.store)

    def _bm25_index(self) -> BM25Index:
        from medr3_jax import assets  # noqa: PLC0415

        cache = os.path.join(assets.CACHE_ROOT, "bm25", self.manifest.corpus_sha256 or "unknown")
        return BM25Index.open(self.index_dir, self.store.iter_contents, cache_dir=cache)

    def _dense_index(self, mesh):
        from medr3_jax.sharding import make_mesh  # noqa: PLC0415

        # Queries go through the query encoder (MedCPT: a separate checkpoint), styled as at embed time.
        encoder_dir = self.manifest.query_encoder_dir
        self._encoder = load_encoder(encoder_dir, **style_overrides(self.manifest.style))
        self._tokenizer = load_encoder_tokenizer(encoder_dir)
        self._embed = nnx.jit(lambda model, tokens, mask: model.embed(tokens, mask))
        num_rows = len(self.store)
        if self.backend == "scann":
            from medr3_jax.retrieval.scann_index import (  # noqa: PLC0415
                HostShardedScann,
                cached_build,
                host_row_range,
                import_scann,
            )

            import_scann()  # before reading the table: a missing package says how to install it

            # One share of the rows per process; candidates are merged across processes. An index
            # built by an earlier run over the same rows is loaded from the local cache.
            lo, hi = host_row_range(num_rows, jax.process_index(), jax.process_count())
            local = None
            if hi > lo:
                read = lambda: self._table_rows(lo, hi)  # noqa: E731
                local = cached_build(read, num_rows=hi - lo, row_offset=lo, table_key=self.manifest.table_key(),
                                     rows=lambda local_rows: self._gather_rows(local_rows + lo))  # fmt: skip
            return HostShardedScann(local, num_rows, jax.process_count())
        dtype = np.load(self.manifest.shards[0].file(self.index_dir, "table"), mmap_mode="r").dtype
        return ExactIndex.from_rows(functools.partial(self._table_rows, dtype=dtype), num_rows, self.manifest.dim,
                                    dtype, mesh or make_mesh("data=-1"))  # fmt: skip

    @functools.cached_property
    def _tables(self) -> list[np.ndarray]:
        """Each shard's table, memory-mapped (opened once)."""
        return [np.load(s.file(self.index_dir, "table"), mmap_mode="r") for s in self.manifest.shards]

    def _gather_rows(self, rows: np.ndarray) -> np.ndarray:
        """The table's vectors [n, D] float32 of global `rows` (ScaNN's re-scoring), read from the
        memory-mapped shards: only their pages are touched."""
        out = np.empty((len(rows), self.manifest.dim), np.float32)
        shard_of = np.searchsorted(self.store.starts, rows, side="right") - 1
        for s in np.unique(shard_of):
            pick = np.flatnonzero(shard_of == s)
            out[pick] = self._tables[s][rows[pick] - self.store.starts[s]]
        return out

    def _table_rows(self, lo: int, hi: int, dtype=np.float32) -> np.ndarray:
        """Rows [lo, hi) of the embedding table in `dtype`, reading only the shard files they span."""
        parts = []
        for shard in self.manifest.shards:
            start, stop = shard.rows
            if stop <= lo or start >= hi:
                continue
            table = np.load(shard.file(self.index_dir, "table"), mmap_mode="r")
            parts.append(np.asarray(table[max(lo, start) - start : min(hi, stop) - start], dtype))
        return np.concatenate(parts) if parts else np.zeros((0, self.manifest.dim), dtype)

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Query vectors [Q,D] from the query encoder (query prefix applied, e.g. e5's "query: ")."""
        tokens, mask = encoder_inputs(
            self._tokenizer, list(queries), max_len=self.manifest.query_width, prefix=self._encoder.config.query_prefix,
            buckets=QUERY_BUCKETS,
        )  # fmt: skip
        return np.asarray(self._embed(self._encoder, tokens, mask))

    @functools.cached_property
    def embedding_id(self) -> str:
        """What makes `encode_queries` vectors comparable: a hash of the query encoder's weight
        files, its style and the query width. Stored beside a reference's vector
        (`data.references`), so that a vector is reused only under the same encoder."""
        encoder_dir = self.manifest.query_encoder_dir
        digest = hashlib.sha256()
        names = sorted(n for n in os.listdir(encoder_dir) if n.endswith((".safetensors", ".bin", ".json")))
        for name in names:
            digest.update(name.encode())
            with open(os.path.join(encoder_dir, name), "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        return f"{digest.hexdigest()[:16]}/{self.manifest.style or 'own'}/q{self.manifest.query_width}"

    def search(self, queries: Sequence[str], k: int) -> tuple[list[list[str]], np.ndarray]:
        """Top-k passage ids per query and their scores (RRF scores for fusion)."""
        return self.rank(self.prepare(queries), k)

    @property
    def collective(self) -> bool:
        """Whether `rank` is one program over every process (exact, scann and fusion on several
        processes: the table or its candidates are split over the hosts), so that every process
        must call it together; `prepare` is always this process's alone."""
        return self.backend != "bm25" and jax.process_count() > 1

    def prepare(self, queries: Sequence[str]) -> PreparedQueries:
        """The part of a search each process does on its own: the query vectors (dense backends)."""
        vectors = None if self.backend == "bm25" else self.encode_queries(queries)
        return PreparedQueries(list(queries), vectors)

    def rank(self, prepared: PreparedQueries, k: int) -> tuple[list[list[str]], np.ndarray]:
        """Top-k ids and scores of prepared queries (a collective when `collective`)."""
        if self.backend == "bm25":
            rows, scores = self._bm25.search(prepared.queries, k)
            return self._ids(rows), scores
        rows, scores = self._dense.search(prepared.vectors, k)
        rows, scores = np.asarray(rows), np.asarray(scores)
        if self.backend != "fusion":
            return self._ids(rows), scores
        lexical, _ = self._bm25.search(prepared.queries, k)
        fused = [reciprocal_rank_fusion([dense.tolist(), words.tolist()], k=k, rrf_k=self.rrf_k)
                 for dense, words in zip(rows, lexical)]  # fmt: skip
        return self._ids([[r for r, _ in f] for f in fused]), np.asarray([[s for _, s in f] for f in fused], np.float32)

    def _ids(self, rows) -> list[list[str]]:
        return [self.store.ids(row) for row in rows]

    def passage(self, passage_id: str) -> Passage:
        return self.store.passage(self.store.rows([passage_id])[0])

    def passage_tokens(self, passage_ids: Sequence[str]) -> list[list[int]]:
        """The policy's pre-tokenised text of each passage (from the embed run's store)."""
        return self.store.tokens(self.store.rows(passage_ids))
