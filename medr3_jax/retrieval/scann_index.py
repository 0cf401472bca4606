"""ScaNN approximate search on the host: tree partitioning + asymmetric hashing, then the
candidates re-scored exactly in float32 from the table's own rows; sized from the table; brute
force below a threshold (tiny corpora cannot train the tree).

    index = ScannIndex.build(table, k_hint=10)      # table [N,D] float32, inner product
    index.config.leaves_to_search, index.config.calibrated_recall   # chosen on the table itself
    rows, scores = index.search(query_vectors, k=10)
    index.save(directory); ScannIndex.load(directory, rows=read_rows)

The exact re-scoring reads the candidates' rows through `rows` (the Retriever: from the
memory-mapped float16 shards), instead of ScaNN's own float32 copy of the table: the index then
holds its tree and hash codes only, a fraction of the table, and the scores are those of the
float32 table, as ScaNN's float32 reordering gave them.

How many leaves to search (and how many candidates to re-rank) depends on how clustered the
embeddings are, which no formula from N alone knows: `build` calibrates them on the table. It
draws CALIBRATION_QUERIES rows as queries, finds their exact top-k among the other rows (numpy,
blocks of rows), and takes the fewest leaves — doubling from 1/256 of them — whose recall@k
reaches `target_recall` (default CALIBRATION_RECALL = 0.97, a margin over the 0.95 we promise,
since real queries are not table rows); when more leaves stop helping, it doubles the re-rank
count instead (up to 4x). A table whose target is out of reach gets the most thorough setting
tried, with a logged warning. A `config` passed in is used as given.

`cached_build` keeps built indexes in a local cache (~/.cache/medr3_jax/scann, keyed by what
the table was made from and the row range), so a restarted or resumed run loads its index
instead of training it again.

On several hosts each host indexes its own contiguous share of the rows (`HostShardedScann`:
`row_offset` = its first row); every host searches its share for the same queries, the
candidates are all-gathered and merged into one top-k, identical on every host.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
from typing import Any, Callable

import numpy as np

from medr3_jax.assets import CACHE_ROOT
from medr3_jax.progress import waiting
from medr3_jax.sharding.distributed import gather_from_processes

BRUTE_FORCE_BELOW = 20_000  # rows; below this an exact scan is as fast and needs no training
CALIBRATION_QUERIES = 256  # table rows used as queries when calibrating the search
CALIBRATION_RECALL = 0.97  # recall@k the calibrated search reaches on them
CALIBRATION_BLOCK_ROWS = 65_536  # rows per block of the exact neighbours (256 x 64k f32 = 64 MB)

SCANN_CACHE_DIR = os.path.join(CACHE_ROOT, "scann")
BUILD_VERSION = 3  # bump when build() would make a different index from the same table (3: re-scored outside ScaNN)

log = logging.getLogger("medr3_jax.retrieval.scann")
SCANN_INSTALL = "pip install 'medr3_jax[scann]'"


def import_scann() -> Any:
    """The scann module, or an ImportError that says how to install it (an optional extra: its
    wheels are Linux-only; the exact and bm25 backends need nothing beyond the core)."""
    try:
        import scann  # noqa: PLC0415 - optional, host-side only
    except ImportError as err:
        raise ImportError(
            f"retrieval backend 'scann' needs the scann package ({err}): {SCANN_INSTALL} (Linux wheels only); "
            "the 'exact' and 'bm25' backends need nothing more"
        ) from err
    return scann


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScannConfig:
    """Search parameters. `sized_for` picks them from the table size, after ScaNN's guidance:
    about 2*sqrt(N) leaves (at most 16k), asymmetric hashing with 2 dims per block, exact
    reordering of max(20 k, 200) candidates; search 1/8 of the leaves up to 100k rows, then a
    share falling with N (1/80 at 1M) down to 1/128 (10M rows and up). `ScannIndex.build`
    replaces leaves_to_search / reorder by calibrated values (module doc) and records the
    recall they reached on the table in `calibrated_recall` (None: not calibrated). Measured by
    bench/retrieval.py on a clustered 1M x 384 table: recall@10 is capped by the reorder count
    (100: 0.967, 200: 0.997), not by the leaves searched (6 .. 250 of 2000 gave the same
    recall; QPS fell 5x)."""

    num_leaves: int
    leaves_to_search: int
    reorder: int
    brute_force: bool = False
    calibrated_recall: float | None = None

    @classmethod
    def sized_for(cls, rows: int, k_hint: int = 10) -> ScannConfig:
        if rows < BRUTE_FORCE_BELOW:
            return cls(num_leaves=0, leaves_to_search=0, reorder=0, brute_force=True)
        leaves = int(min(2 * math.sqrt(rows), 16_384))
        share = 1 / 8 if rows <= 100_000 else max(1 / 128, 100_000 / rows / 8)
        return cls(num_leaves=leaves, leaves_to_search=max(int(leaves * share), 8), reorder=max(20 * k_hint, 200))


RowReader = Callable[[np.ndarray], np.ndarray]  # local row ids [n] -> their vectors [n, D]


class ScannIndex:
    """A ScaNN searcher over rows [row_offset, row_offset + N) of the global table; `rows`
    reads the vectors of local rows for the exact re-scoring (None for a brute-force index)."""

    def __init__(self, searcher: Any, config: ScannConfig, num_rows: int, row_offset: int = 0,
                 rows: RowReader | None = None):  # fmt: skip
        self.searcher, self.config, self.num_rows, self.row_offset = searcher, config, num_rows, row_offset
        self.rows = rows

    @classmethod
    def build(
        cls,
        table: np.ndarray,
        *,
        k_hint: int = 10,
        row_offset: int = 0,
        config: ScannConfig | None = None,
        target_recall: float = CALIBRATION_RECALL,
    ) -> ScannIndex:
        """Trains and indexes `table`; without a `config`, sizes the tree from the row count and
        calibrates the search to `target_recall` (module doc)."""
        scann = import_scann()

        table = np.ascontiguousarray(table, np.float32)
        calibrate = config is None
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
                .build()
            )
        index = cls(searcher, config, len(table), row_offset, rows=lambda r: table[r])
        if calibrate and not config.brute_force:
            index.config = calibrated_config(index, table, k_hint, target_recall)
        return index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(global row ids [Q,k] int64, scores [Q,k] f32), best first."""
        if not 0 < k <= self.num_rows:
            raise ValueError(f"k={k} must be in [1, {self.num_rows}] (rows in this index)")
        queries = np.ascontiguousarray(queries, np.float32)
        if self.config.brute_force:
            rows, scores = self.searcher.search_batched(queries, final_num_neighbors=k)
            return rows.astype(np.int64) + self.row_offset, scores.astype(np.float32)
        if self.rows is None:
            raise ValueError("ScannIndex.search re-scores candidates from the table: load it with rows=")
        # One sub-batch per core: search_batched is single-threaded (2x at 20k rows, 1.6x at 1M).
        candidates, _ = self.searcher.search_batched_parallel(
            queries,
            final_num_neighbors=max(self.config.reorder, k),
            leaves_to_search=self.config.leaves_to_search,
            batch_size=max(1, -(-len(queries) // (os.cpu_count() or 1))),
        )
        rows, scores = rescore(queries, candidates.astype(np.int64), self.rows, k)
        return rows + self.row_offset, scores

    def save(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.searcher.serialize(directory)
        meta = {"config": dataclasses.asdict(self.config), "num_rows": self.num_rows, "row_offset": self.row_offset}
        with open(os.path.join(directory, "medr3_scann.json"), "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=1)

    @classmethod
    def load(cls, directory: str, rows: RowReader | None = None) -> ScannIndex:
        scann = import_scann()

        meta_file = os.path.join(directory, "medr3_scann.json")
        if not os.path.exists(meta_file):
            raise FileNotFoundError(f"{meta_file}: not a saved ScannIndex (missing metadata)")
        with open(meta_file, encoding="utf-8") as fh:
            meta = json.load(fh)
        assets = os.path.join(directory, "scann_assets.pbtxt")
        if not os.path.exists(assets):
            raise FileNotFoundError(f"{assets}: missing (an incomplete ScaNN save)")
        with open(assets, encoding="utf-8") as fh:
            text = fh.read()
        # ScaNN records absolute asset paths; point them into `directory`, wherever it was saved.
        here = os.path.abspath(directory)
        text = re.sub(r'asset_path: "[^"]*?([^/"]+)"', lambda m: f'asset_path: "{os.path.join(here, m[1])}"', text)
        ops = scann.scann_ops_pybind
        searcher = ops.ScannSearcher(ops.scann_pybind.ScannNumpy(here, text), None)  # as load_searcher, no docids
        return cls(searcher, ScannConfig(**meta["config"]), meta["num_rows"], meta["row_offset"], rows=rows)


def cached_build(
    read_rows: Callable[[], np.ndarray],
    *,
    num_rows: int,
    row_offset: int,
    table_key: dict[str, Any],
    cache_dir: str | None = None,
    rows: RowReader | None = None,
) -> ScannIndex:
    """`ScannIndex.build(read_rows(), row_offset=row_offset)` over the table's rows
    [row_offset, row_offset + num_rows), loaded from `cache_dir` (default SCANN_CACHE_DIR) when
    an index of the same rows was built before. `table_key` names what the table was made from
    (the embed manifest's corpus checksum, encoder, dtype, count): a change there, in the row
    range or in how `build` sizes and calibrates, makes a new entry. Small tables (brute force)
    are not cached. A save that fails (read-only or full disk) is logged and the index is used.
    `rows` reads local rows for the re-scoring (default: the table `read_rows` gave, kept in
    memory); pass a reader of the stored table so that the index does not hold a copy."""
    if ScannConfig.sized_for(num_rows).brute_force:
        return ScannIndex.build(read_rows(), row_offset=row_offset)
    key = table_key | {
        "rows": [row_offset, row_offset + num_rows], "build_version": BUILD_VERSION,
        "sized": dataclasses.asdict(ScannConfig.sized_for(num_rows)),
        "calibration": [CALIBRATION_QUERIES, CALIBRATION_RECALL],
    }  # fmt: skip
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = os.path.join(cache_dir or SCANN_CACHE_DIR, digest)
    if os.path.exists(os.path.join(path, "medr3_scann.json")):
        log.info("ScaNN index of rows [%d, %d) loaded from %s", row_offset, row_offset + num_rows, path)
        return ScannIndex.load(path, rows=rows)
    with waiting(f"building the ScaNN index of rows [{row_offset}, {row_offset + num_rows})"):
        index = ScannIndex.build(read_rows(), row_offset=row_offset)
    if rows is not None:
        index.rows = rows  # the built-in reader held the float32 table; let it go
    part = f"{path}.part-{os.getpid()}"
    try:
        index.save(part)
        with open(os.path.join(part, "key.json"), "w", encoding="utf-8") as fh:
            json.dump(key, fh, indent=1)
        shutil.rmtree(path, ignore_errors=True)  # an incomplete entry (no medr3_scann.json)
        os.replace(part, path)  # whole or absent: a crash mid-save leaves only the .part folder
        log.info("ScaNN index of rows [%d, %d) saved to %s", row_offset, row_offset + num_rows, path)
    except OSError as err:
        log.warning("ScaNN index not cached (%s): the next run builds it again", err)
        shutil.rmtree(part, ignore_errors=True)
    return index


def calibrated_config(index: ScannIndex, table: np.ndarray, k: int, target: float) -> ScannConfig:
    """The fewest leaves (then the fewest extra re-ranked candidates) whose recall@k on
    CALIBRATION_QUERIES of the table's own rows reaches `target` (module doc)."""
    picks = np.random.default_rng(0).choice(
        len(table), size=min(CALIBRATION_QUERIES, len(table) - k - 1), replace=False
    )
    queries = table[picks]
    truth = neighbours_excluding_self(table, queries, picks, k)
    base = index.config
    leaves, reorder, previous = max(base.num_leaves // 256, 1), base.reorder, -1.0
    while True:
        cfg = dataclasses.replace(base, leaves_to_search=leaves, reorder=reorder)
        rows, _ = ScannIndex(index.searcher, cfg, index.num_rows, rows=index.rows).search(queries, k + 1)
        found = [[r for r in row if r != pick][:k] for row, pick in zip(rows, picks)]
        recall = float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)]))
        if recall >= target:
            break
        if leaves < base.num_leaves and (recall - previous > 0.002 or reorder >= 4 * base.reorder):
            leaves, previous = min(2 * leaves, base.num_leaves), recall
        elif reorder < 4 * base.reorder:
            reorder *= 2  # more leaves stopped helping: the re-ranking caps recall
        else:
            log.warning(
                "ScaNN calibration: recall@%d %.3f < target %.3f even with %d of %d leaves and %d re-ranked "
                "candidates; searching with those (pass ScannIndex.build(config=...) to choose)",
                k, recall, target, leaves, base.num_leaves, reorder,
            )  # fmt: skip
            break
    log.info("ScaNN calibrated on %d rows: %d of %d leaves, re-rank %d, recall@%d %.3f (target %.3f)",
             len(table), leaves, base.num_leaves, reorder, k, recall, target)  # fmt: skip
    return dataclasses.replace(cfg, calibrated_recall=recall)


def neighbours_excluding_self(table: np.ndarray, queries: np.ndarray, picks: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k rows [Q,k] by inner product for queries = table[picks], each without its own
    row; the table is scanned in blocks, so no [Q, N] matrix is built."""
    best_rows = np.zeros((len(queries), 0), np.int64)
    best_scores = np.zeros((len(queries), 0), np.float32)
    for lo in range(0, len(table), CALIBRATION_BLOCK_ROWS):
        scores = queries @ table[lo : lo + CALIBRATION_BLOCK_ROWS].T
        rows = np.arange(lo, lo + scores.shape[1])
        scores[rows[None, :] == picks[:, None]] = -np.inf
        take = min(k, scores.shape[1])
        top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        best_rows = np.concatenate([best_rows, top + lo], axis=1)
        best_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        keep = np.argsort(-best_scores, axis=1, kind="stable")[:, :k]
        best_rows, best_scores = np.take_along_axis(best_rows, keep, 1), np.take_along_axis(best_scores, keep, 1)
    return best_rows


def rescore(queries: np.ndarray, candidates: np.ndarray, read: RowReader, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best k of each query's candidate rows [Q, c] by exact float32 inner product with
    their vectors (`read`, each distinct row read once); ties to the smaller row, padding (-1)
    last. Returns (rows [Q, k] int64, scores [Q, k] f32)."""
    valid = candidates >= 0
    unique, inverse = np.unique(np.where(valid, candidates, 0), return_inverse=True)
    vectors = np.asarray(read(unique), np.float32)
    scores = np.einsum("qd,qcd->qc", queries, vectors[inverse.reshape(candidates.shape)])
    scores = np.where(valid, scores, -np.inf).astype(np.float32)
    order = np.lexsort((np.where(valid, candidates, np.iinfo(np.int64).max), -scores), axis=-1)[:, :k]
    return np.take_along_axis(candidates, order, 1), np.take_along_axis(scores, order, 1)


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
