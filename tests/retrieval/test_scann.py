"""ScaNN against exact search: recall@10 on a 50k-row clustered table, serialize -> load, and the
brute-force path for small tables."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from medr3_jax.retrieval.scann_index import ScannConfig, ScannIndex


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(50, d))
    x = centers[rng.integers(0, 50, n)] + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _exact(table: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ table.T), axis=1, kind="stable")[:, :k]


@pytest.fixture(scope="module")
def table_and_queries():
    table = _clustered(50_000, 64, 0)
    queries = table[np.random.default_rng(1).integers(0, 50_000, 200)] + 0.05 * _clustered(200, 64, 2)
    return table, queries.astype(np.float32)


@pytest.fixture(scope="module")
def index(table_and_queries):
    return ScannIndex.build(table_and_queries[0], k_hint=10)


def test_recall_at_10_against_exact(index, table_and_queries):
    table, queries = table_and_queries
    assert not index.config.brute_force and index.config.num_leaves > 100
    rows, scores = index.search(queries, k=10)
    want = _exact(table, queries, 10)
    recall = np.mean([len(set(r) & set(w)) / 10 for r, w in zip(rows, want)])
    assert recall >= 0.95, recall
    np.testing.assert_allclose(
        scores, np.take_along_axis(queries @ table.T, rows, axis=1), atol=1e-4
    )  # reordered exactly


def test_serialize_then_load_gives_identical_results(index, table_and_queries, tmp_path):
    queries = table_and_queries[1]
    index.save(str(tmp_path / "scann"))
    shutil.move(tmp_path / "scann", tmp_path / "moved")  # ScaNN records absolute paths: load from anywhere
    table = table_and_queries[0]
    loaded = ScannIndex.load(str(tmp_path / "moved"), rows=lambda r: table[r])
    a, b = index.search(queries, k=10), loaded.search(queries, k=10)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert loaded.config == index.config
    assert not any(f.name == "dataset.npy" for f in (tmp_path / "moved").iterdir())  # no float32 copy saved
    with pytest.raises(ValueError, match="re-scores candidates from the table: load it with rows="):
        ScannIndex.load(str(tmp_path / "moved")).search(queries, k=10)


def test_small_tables_use_brute_force_and_offsets():
    table = _clustered(300, 16, 3)
    index = ScannIndex.build(table, row_offset=1000)
    assert index.config == ScannConfig.sized_for(300)
    assert index.config.brute_force
    rows, _ = index.search(table[:5], k=3)
    np.testing.assert_array_equal(rows - 1000, _exact(table, table[:5], 3))
    with pytest.raises(ValueError, match="k=301"):
        index.search(table[:1], k=301)


def test_load_without_metadata_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="medr3_scann.json"):
        ScannIndex.load(str(tmp_path))


def test_merge_candidates_by_hand():
    from medr3_jax.retrieval.scann_index import merge_candidates

    rows = np.array([[[4, 7, -1]], [[2, 9, 5]]])  # [P=2, Q=1, c=3]; -1 pads a short shard
    scores = np.array([[[0.9, 0.5, -np.inf]], [[0.9, 0.7, 0.1]]], np.float32)
    got_rows, got_scores = merge_candidates(rows, scores, 4)
    assert got_rows.tolist() == [[2, 4, 9, 7]]  # 0.9 tie -> smaller id first
    np.testing.assert_array_equal(got_scores, np.float32([[0.9, 0.9, 0.7, 0.5]]))


@pytest.mark.parametrize("processes", [2, 3, 7])
def test_host_shards_merged_equal_brute_force(processes):
    from medr3_jax.retrieval.scann_index import HostShardedScann, ScannIndex, host_row_range, merge_candidates

    rng = np.random.default_rng(processes)
    table = rng.normal(size=(3001, 16)).astype(np.float32)
    queries = rng.normal(size=(9, 16)).astype(np.float32)
    ranges = [host_row_range(len(table), p, processes) for p in range(processes)]
    assert ranges[0][0] == 0 and ranges[-1][1] == len(table)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))  # contiguous, no gaps or overlaps
    shards = [HostShardedScann(ScannIndex.build(table[lo:hi], row_offset=lo), len(table)) for lo, hi in ranges]
    candidates = [s.local_candidates(queries, 10) for s in shards]  # what each host contributes
    rows, scores = merge_candidates(np.stack([c[0] for c in candidates]), np.stack([c[1] for c in candidates]), 10)
    want = np.argsort(-(queries @ table.T), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(rows, want)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ table.T, want, axis=1), rtol=1e-5)


def _self_recall(index: ScannIndex, table: np.ndarray, picks: np.ndarray, leaves: int, reorder: int) -> float:
    """recall@10 of table[picks] as queries, each query's own row left out: numpy brute force."""
    import dataclasses

    cfg = dataclasses.replace(index.config, leaves_to_search=leaves, reorder=reorder)
    rows, _ = ScannIndex(index.searcher, cfg, index.num_rows, rows=index.rows).search(table[picks], 11)
    scores = table[picks] @ table.T
    scores[np.arange(len(picks)), picks] = -np.inf
    want = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    found = [[r for r in row if r != p][:10] for row, p in zip(rows, picks)]
    return float(np.mean([len(set(f) & set(w)) / 10 for f, w in zip(found, want)]))


def test_calibration_picks_the_fewest_leaves_reaching_the_target(index, table_and_queries):
    from medr3_jax.retrieval.scann_index import CALIBRATION_QUERIES, CALIBRATION_RECALL

    table = table_and_queries[0]
    cfg = index.config
    picks = np.random.default_rng(0).choice(len(table), size=CALIBRATION_QUERIES, replace=False)  # as build draws
    assert cfg.calibrated_recall == pytest.approx(_self_recall(index, table, picks, cfg.leaves_to_search, cfg.reorder))
    assert cfg.calibrated_recall >= CALIBRATION_RECALL
    assert cfg.leaves_to_search < ScannConfig.sized_for(len(table)).leaves_to_search  # clustered: fewer than sized
    if cfg.leaves_to_search > max(cfg.num_leaves // 256, 1):  # the step before fell short
        assert _self_recall(index, table, picks, cfg.leaves_to_search // 2, cfg.reorder) < CALIBRATION_RECALL


def test_unclustered_tables_calibrate_to_more_leaves(index):
    rng = np.random.default_rng(5)
    table = rng.normal(size=(30_000, 32)).astype(np.float32)  # no structure for the tree to use
    diffuse = ScannIndex.build(table, k_hint=10)
    assert diffuse.config.calibrated_recall >= 0.97
    assert diffuse.config.leaves_to_search / diffuse.config.num_leaves > 4 * (
        index.config.leaves_to_search / index.config.num_leaves
    )


def test_exact_neighbours_in_blocks_equal_brute_force(monkeypatch):
    from medr3_jax.retrieval import scann_index

    monkeypatch.setattr(scann_index, "CALIBRATION_BLOCK_ROWS", 700)  # several blocks and a short last one
    table = _clustered(3000, 16, 4)
    picks = np.array([0, 5, 2999, 1400])
    got = scann_index.neighbours_excluding_self(table, table[picks], picks, 10)
    scores = table[picks] @ table.T
    scores[np.arange(4), picks] = -np.inf
    np.testing.assert_array_equal(got, np.argsort(-scores, axis=1, kind="stable")[:, :10])


def test_cached_build_loads_the_saved_index_and_keys_on_the_table(table_and_queries, tmp_path, monkeypatch, caplog):
    from medr3_jax.retrieval import scann_index

    table, queries = table_and_queries
    reads = []

    def read():
        reads.append(1)
        return table

    key = {"corpus_sha256": "abc", "encoder": "minilm"}
    first = scann_index.cached_build(read, num_rows=len(table), row_offset=7, table_key=key, cache_dir=str(tmp_path),
                                     rows=lambda r: table[r])  # fmt: skip
    assert len(reads) == 1 and len(list(tmp_path.iterdir())) == 1  # one entry, no .part left
    monkeypatch.setattr(ScannIndex, "build", lambda *a, **k: pytest.fail("rebuilt a cached index"))
    again = scann_index.cached_build(read, num_rows=len(table), row_offset=7, table_key=key, cache_dir=str(tmp_path),
                                     rows=lambda r: table[r])  # fmt: skip
    assert len(reads) == 1  # the table was not even read
    assert again.config == first.config and again.row_offset == 7
    for a, b in zip(first.search(queries, 10), again.search(queries, 10)):
        np.testing.assert_array_equal(a, b)
    monkeypatch.undo()
    other = {"corpus_sha256": "abd", "encoder": "minilm"}  # another corpus: another entry
    scann_index.cached_build(read, num_rows=len(table), row_offset=7, table_key=other, cache_dir=str(tmp_path))
    assert len(reads) == 2 and len(list(tmp_path.iterdir())) == 2

    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with caplog.at_level("WARNING", logger="medr3_jax.retrieval.scann"):
        index = scann_index.cached_build(read, num_rows=len(table), row_offset=0, table_key=key, cache_dir=str(blocked))
    assert "not cached" in caplog.text and index.search(queries[:2], 3)[0].shape == (2, 3)
