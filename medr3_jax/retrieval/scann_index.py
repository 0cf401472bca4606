"""ScaNN approximate search on the host: tree partitioning + asymmetric hashing + exact reorder,
sized from the table; brute force below a threshold (tiny corpora cannot train the tree).

    index = ScannIndex.build(table, k_hint=10)      # table [N,D] float32, inner product
    rows, scores = index.search(query_vectors, k=10)
    index.save(directory); ScannIndex.load(directory)

On several hosts each host indexes its own contiguous share of the rows (`HostShardedScann`:
`row_offset` = its first row); every host searches its share for the same queries, the
candidates are all-gathered and merged into one top-k, identical on every host.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Callable

import numpy as np

from medr3_jax.sharding.distributed import gather_from_processes

BRUTE_FORCE_BELOW = 20_000  # rows; below this an exact scan is as fast and needs no training


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScannConfig:
    """Search parameters. `sized_for` picks them from the table size, after ScaNN's guidance:
    about 2*sqrt(N) leaves (at most 16k), asymmetric hashing with 2 dims per block, exact
    reordering of max(20 k, 200) candidates; search 1/8 of the leaves up to 100k rows, then a
    share falling with N (1/80 at 1M) down to 1/128 (10M rows and up). Measured by
    bench/retrieval.py on a clustered 1M x 384 table: recall@10 is capped by the reorder count
    (100: 0.967, 200: 0.997), not by the leaves searched (15 .. 250 of 2000 gave the same
    recall; QPS fell 5x). Check the share on your own embeddings: real ones are less clustered."""

    num_leaves: int
    leaves_to_search: int
    reorder: int
    brute_force: bool = False

    @classmethod
    def sized_for(cls, rows: int, k_hint: int = 10) -> ScannConfig:
        if rows < BRUTE_FORCE_BELOW:
            return cls(num_leaves=0, leaves_to_search=0, reorder=0, brute_force=True)
        leaves = int(min(2 * math.sqrt(rows), 16_384))
        share = 1 / 8 if rows <= 100_000 else max(1 / 128, 100_000 / rows / 8)
        return cls(num_leaves=leaves, leaves_to_search=max(int(leaves * share), 8), reorder=max(20 * k_hint, 200))


class ScannIndex:
    """A ScaNN searcher over rows [row_offset, row_offset + N) of the global table."""

    def __init__(self, searcher: Any, config: ScannConfig, num_rows: int, row_offset: int = 0):
        self.searcher, self.config, self.num_rows, self.row_offset = searcher, config, num_rows, row_offset

    @classmethod
    def build(
        cls, table: np.ndarray, *, k_hint: int = 10, row_offset: int = 0, config: ScannConfig | None = None
    ) -> ScannIndex:
        import scann  # noqa: PLC0415 - optional, host-side only

        table = np.ascontiguousarray(table, np.float32)
        config = config or ScannConfig.sized_for(len(table), k_hint)
        builder = scann.scann_ops_pybind.builder(table, k_hint, "dot_product")
        if config.brute_force:
            searcher = builder.score_brute_force().build()
        else:
            searcher = (
                builder.tree(
                    num_leaves=config.num_leaves,
                    num_leaves_to_search=config.leaves_to_search,
                    training_sample_size=min(len(table), 250_000),
                )
                .score_ah(2, anisotropic_quantization_threshold=0.2)
                .reorder(config.reorder)
                .build()
            )
        return cls(searcher, config, len(table), row_offset)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(global row ids [Q,k] int64, scores [Q,k] f32), best first."""
        if not 0 < k <= self.num_rows:
            raise ValueError(f"k={k} must be in [1, {self.num_rows}] (rows in this index)")
        queries = np.ascontiguousarray(queries, np.float32)
        if self.config.brute_force:
            rows, scores = self.searcher.search_batched(queries, final_num_neighbors=k)
        else:
            # One sub-batch per core: search_batched is single-threaded (2x at 20k rows, 1.6x at 1M).
            rows, scores = self.searcher.search_batched_parallel(
                queries,
                final_num_neighbors=k,
                leaves_to_search=self.config.leaves_to_search,
                pre_reorder_num_neighbors=self.config.reorder,
                batch_size=max(1, -(-len(queries) // (os.cpu_count() or 1))),
            )
        return rows.astype(np.int64) + self.row_offset, scores.astype(np.float32)

    def save(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.searcher.serialize(directory)
        meta = {"config": dataclasses.asdict(self.config), "num_rows": self.num_rows, "row_offset": self.row_offset}
        with open(os.path.join(directory, "medr3_scann.json"), "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=1)

    @classmethod
    def load(cls, directory: str) -> ScannIndex:
        import scann  # noqa: PLC0415

        meta_file = os.path.join(directory, "medr3_scann.json")
        if not os.path.exists(meta_file):
            raise FileNotFoundError(f"{meta_file}: not a saved ScannIndex (missing metadata)")
        with open(meta_file, encoding="utf-8") as fh:
            meta = json.load(fh)
        searcher = scann.scann_ops_pybind.load_searcher(directory)
        return cls(searcher, ScannConfig(**meta["config"]), meta["num_rows"], meta["row_offset"])


def host_row_range(num_rows: int, process_index: int, process_count: int) -> tuple[int, int]:
    """Rows [lo, hi) of the table that process `process_index` indexes: an even contiguous split."""
    per, extra = divmod(num_rows, process_count)
    lo = process_index * per + min(process_index, extra)
    return lo, lo + per + (process_index < extra)


def merge_candidates(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidates [P, Q, c] from P shards -> the best k per query [Q, k]: highest score first,
    ties to the smaller row id (so every host merges to the same answer). Padding rows are -1
    with score -inf and sort last."""
    p, q, c = rows.shape
    flat_rows = rows.transpose(1, 0, 2).reshape(q, p * c)
    flat_scores = scores.transpose(1, 0, 2).reshape(q, p * c)
    order = np.lexsort((np.where(flat_rows < 0, np.iinfo(np.int64).max, flat_rows), -flat_scores), axis=-1)[:, :k]
    return np.take_along_axis(flat_rows, order, axis=1), np.take_along_axis(flat_scores, order, axis=1)


class HostShardedScann:
    """One ScaNN index per process over its share of the rows (`host_row_range`); `search`
    runs on every process with the same queries (the train loop's replicated host side),
    all-gathers each share's top-k and merges them. On one process it is the plain index."""

    def __init__(
        self,
        local: ScannIndex | None,
        num_rows: int,
        process_count: int = 1,
        gather: Callable[[np.ndarray], np.ndarray] = gather_from_processes,
    ):
        self.local, self.num_rows, self.process_count, self._gather = local, num_rows, process_count, gather

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(global row ids [Q,k] int64, scores [Q,k] f32), best first, over every host's rows."""
        if not 0 < k <= self.num_rows:
            raise ValueError(f"k={k} must be in [1, {self.num_rows}] (rows in the table)")
        rows, scores = self.local_candidates(queries, k)
        if self.process_count == 1:
            return rows, scores
        all_rows = self._gather(rows.astype(np.int32)).astype(np.int64)  # ids < 2**31 (54M MedCorp rows fit)
        return merge_candidates(all_rows, self._gather(scores), k)

    def local_candidates(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """This share's top-min(k, its rows), padded to k with (-1, -inf)."""
        q = len(queries)
        rows, scores = np.full((q, k), -1, np.int64), np.full((q, k), -np.inf, np.float32)
        take = min(k, self.local.num_rows) if self.local is not None else 0  # None: a process with no rows
        if take:
            rows[:, :take], scores[:, :take] = self.local.search(queries, take)
        return rows, scores
