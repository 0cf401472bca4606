"""One `Retriever` over an index directory written by `retrieval.embed`, with backends:

exact   the table sharded by rows over the mesh, query encoder on device (ExactIndex)
scann   ScaNN on the host (brute force for small tables); on several processes each indexes
        its share of the rows and the candidates are merged (HostShardedScann)
bm25    lexical BM25 over the passages' contents
fusion  reciprocal-rank fusion of exact and bm25 (MedRAG's RRF, `rrf_k`)

retriever = Retriever.open("index/medcorp", backend="exact")
ids, scores = retriever.search(["troponin in myocardial infarction"], k=5)
retriever.passage(ids[0][0]).contents;  retriever.passage_tokens(ids[0])   # policy tokens
"""

from __future__ import annotations

import functools
import hashlib
import json
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

Backend = Literal["exact", "scann", "bm25", "fusion"]
# Query batches are padded to the smallest of these that holds their longest query (capped at the
# index's query_max_len): policy queries are short, and padding them to 256 made encoding 5x slower.
QUERY_BUCKETS = (16, 32, 64, 128, 256, 512)


class Retriever:
    """search(queries, k) -> (passage ids [Q][k], scores [Q,k]); passage and token lookups."""

    def __init__(
        self, index_dir: str, *, backend: Backend = "exact", mesh: jax.sharding.Mesh | None = None, rrf_k: float = 60.0
    ):
        if backend not in ("exact", "scann", "bm25", "fusion"):
            raise ValueError(f"backend={backend!r}; expected exact, scann, bm25 or fusion")
        manifest_file = os.path.join(index_dir, "manifest.json")
        if not os.path.exists(manifest_file):
            raise FileNotFoundError(
                f"{manifest_file}: not an index directory (run python -m medr3_jax.retrieval.embed)"
            )
        with open(manifest_file, encoding="utf-8") as fh:
            self.manifest = json.load(fh)
        if not self.manifest.get("complete"):
            raise ValueError(f"{manifest_file}: the embedding run did not finish; rerun embed to resume it")
        self.backend, self.rrf_k, self.index_dir = backend, rrf_k, index_dir
        self.passages = self._read_passages()
        self._row = {p.id: i for i, p in enumerate(self.passages)}
        self._tokens, self._lengths = self._read_store()
        self._bm25 = BM25Index.build([p.contents for p in self.passages]) if backend in ("bm25", "fusion") else None
        self._dense = self._dense_index(mesh) if backend != "bm25" else None

    def _shard_files(self, prefix: str, suffix: str) -> list[str]:
        return [os.path.join(self.index_dir, f"{prefix}_{s['index']:05d}{suffix}") for s in self.manifest["shards"]]

    def _read_passages(self) -> list[Passage]:
        out = []
        for file in self._shard_files("passages", ".jsonl"):
            with open(file, encoding="utf-8") as fh:
                for line in fh:
                    obj = json.loads(line)
                    out.append(Passage(obj["id"], obj["title"], "", obj["contents"]))
        return out

    def _read_store(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        files = self._shard_files("tokens", ".npy")
        if not all(os.path.exists(f) for f in files):
            return None, None
        return np.concatenate([np.load(f) for f in files]), np.concatenate(
            [np.load(f) for f in self._shard_files("lengths", ".npy")]
        )

    def _dense_index(self, mesh):
        from medr3_jax.sharding import make_mesh  # noqa: PLC0415

        # Queries go through the query encoder (MedCPT: a separate checkpoint), styled as at embed time.
        encoder_dir = self.manifest.get("query_encoder") or self.manifest["encoder"]
        self._encoder = load_encoder(encoder_dir, **style_overrides(self.manifest.get("style")))
        self._tokenizer = load_encoder_tokenizer(encoder_dir)
        self._embed = nnx.jit(lambda model, tokens, mask: model.embed(tokens, mask))
        num_rows = len(self.passages)
        if self.backend == "scann":
            from medr3_jax.retrieval.scann_index import HostShardedScann, cached_build, host_row_range  # noqa: PLC0415

            # One share of the rows per process; candidates are merged across processes. An index
            # built by an earlier run over the same rows is loaded from the local cache.
            lo, hi = host_row_range(num_rows, jax.process_index(), jax.process_count())
            table_key = {
                k: self.manifest.get(k) for k in ("corpus_sha256", "encoder", "dtype", "count", "dim", "style")
            }
            local = None
            if hi > lo:
                read = lambda: self._table_rows(lo, hi)  # noqa: E731
                local = cached_build(read, num_rows=hi - lo, row_offset=lo, table_key=table_key)
            return HostShardedScann(local, num_rows, jax.process_count())
        return ExactIndex.build(self._table_rows(0, num_rows), mesh or make_mesh("data=-1"))

    def _table_rows(self, lo: int, hi: int) -> np.ndarray:
        """Rows [lo, hi) of the embedding table as float32, reading only the shard files they span."""
        parts = []
        for shard in self.manifest["shards"]:
            start, stop = shard["rows"]
            if stop <= lo or start >= hi:
                continue
            table = np.load(os.path.join(self.index_dir, shard["table"]), mmap_mode="r")
            parts.append(np.asarray(table[max(lo, start) - start : min(hi, stop) - start], np.float32))
        dim = self.manifest["dim"]
        return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Query vectors [Q,D] from the query encoder (query prefix applied, e.g. e5's "query: ")."""
        settings = self.manifest["settings"]
        width = settings.get("query_max_len") or settings["max_len"]
        tokens, mask = encoder_inputs(
            self._tokenizer, list(queries), max_len=width, prefix=self._encoder.config.query_prefix,
            buckets=QUERY_BUCKETS,
        )  # fmt: skip
        return np.asarray(self._embed(self._encoder, tokens, mask))

    @functools.cached_property
    def embedding_id(self) -> str:
        """What makes `encode_queries` vectors comparable: a hash of the query encoder's weight
        files, its style and the query width. Stored beside a reference's vector
        (`data.references`), so that a vector is reused only under the same encoder."""
        encoder_dir = self.manifest.get("query_encoder") or self.manifest["encoder"]
        digest = hashlib.sha256()
        names = sorted(n for n in os.listdir(encoder_dir) if n.endswith((".safetensors", ".bin", ".json")))
        for name in names:
            digest.update(name.encode())
            with open(os.path.join(encoder_dir, name), "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        settings = self.manifest["settings"]
        width = settings.get("query_max_len") or settings["max_len"]
        return f"{digest.hexdigest()[:16]}/{self.manifest.get('style') or 'own'}/q{width}"

    def search(self, queries: Sequence[str], k: int) -> tuple[list[list[str]], np.ndarray]:
        """Top-k passage ids per query and their scores (RRF scores for fusion)."""
        if self.backend == "bm25":
            rows = [self._bm25.search(q, k)[0] for q in queries]
            return self._ids(rows), np.stack([self._bm25.scores(q)[r] for q, r in zip(queries, rows)])
        vectors = self.encode_queries(queries)
        rows, scores = self._dense.search(vectors, k)
        rows, scores = np.asarray(rows), np.asarray(scores)
        if self.backend != "fusion":
            return self._ids(rows), scores
        fused = [
            reciprocal_rank_fusion([dense.tolist(), self._bm25.search(q, k)[0].tolist()], k=k, rrf_k=self.rrf_k)
            for q, dense in zip(queries, rows)
        ]
        return self._ids([[r for r, _ in f] for f in fused]), np.asarray([[s for _, s in f] for f in fused], np.float32)

    def _ids(self, rows) -> list[list[str]]:
        return [[self.passages[int(r)].id for r in row] for row in rows]

    def passage(self, passage_id: str) -> Passage:
        return self.passages[self._row[passage_id]]

    def passage_tokens(self, passage_ids: Sequence[str]) -> list[list[int]]:
        """The policy's pre-tokenised text of each passage (from the embed run's store)."""
        if self._tokens is None:
            raise ValueError(f"{self.index_dir}: no passage store; run embed with --policy_tokenizer")
        rows = [self._row[i] for i in passage_ids]
        return [self._tokens[r, : self._lengths[r]].tolist() for r in rows]
