"""Exact on-device search against numpy brute force, on 1, 2, 4 and 8 emulated devices."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from medr3_jax.retrieval.exact import ExactIndex
from medr3_jax.sharding import make_mesh


def _random(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    """Tight clusters: the hard case where near-ties cross shard and block boundaries."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(20, d))
    x = centers[rng.integers(0, 20, n)] + 0.05 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _brute_force(table: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries.astype(np.float64) @ table.T.astype(np.float64)
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, axis=1), ids


@pytest.mark.parametrize("devices", [1, 2, 4, 8])
@pytest.mark.parametrize("data", ["random", "clustered"])
def test_same_ids_as_numpy_brute_force(devices, data):
    make = _random if data == "random" else _clustered
    table, queries = make(3001, 32, 0), make(17, 32, 1)  # 3001 rows: padding on every mesh
    mesh = make_mesh({"data": devices}, devices=jax.devices()[:devices])
    index = ExactIndex.build(table, mesh, block_rows=128)
    ids, scores = index.search(queries, k=10)
    want_scores, want_ids = _brute_force(table, queries, 10)
    np.testing.assert_array_equal(np.asarray(ids), want_ids)
    np.testing.assert_allclose(np.asarray(scores), want_scores, atol=1e-5)


def test_k_beyond_the_table_is_an_error():
    index = ExactIndex.build(_random(5, 4, 0), make_mesh({"data": 1}, devices=jax.devices()[:1]))
    with pytest.raises(ValueError, match=r"k=6 must be in \[1, 5\]"):
        index.search(_random(1, 4, 1), k=6)


@pytest.mark.parametrize("devices", [1, 8])
def test_a_float16_table_read_per_device_scores_as_its_float32_widening(devices):
    table, queries = _clustered(3001, 32, 2).astype(np.float16), _clustered(17, 32, 3)
    reads = []

    def read_rows(lo: int, hi: int) -> np.ndarray:
        reads.append((lo, hi))
        return table[lo:hi]

    mesh = make_mesh({"data": devices}, devices=jax.devices()[:devices])
    index = ExactIndex.from_rows(read_rows, 3001, 32, np.float16, mesh, block_rows=128)
    assert index.table.dtype == np.float16  # half the memory of the float32 table
    assert len(reads) == devices and sum(hi - lo for lo, hi in reads) == 3001  # each device its own rows
    ids, scores = index.search(queries, k=10)
    want_scores, want_ids = _brute_force(table.astype(np.float32), queries, 10)
    np.testing.assert_array_equal(np.asarray(ids), want_ids)
    np.testing.assert_allclose(np.asarray(scores), want_scores, atol=1e-5)
