"""Exact maximum-inner-product search on device over a row-sharded embedding table.

Each device scores its own rows block by block, keeping a running top-k (no [queries x N]
matrix is ever built), then the per-device candidates are all-gathered and merged:

    index = ExactIndex.build(table, mesh)              # [N,D] rows spread over every device
    index = ExactIndex.from_rows(read_rows, n, d, np.float16, mesh)   # each device reads its own rows
    ids, scores = index.search(query_vectors, k=5)     # [Q,k] int32 (global row ids), [Q,k] f32

The table stays on device in its stored dtype (float16 / bfloat16: half the memory of float32);
each block is widened to float32 as it is scored against float32 queries, so the scores are those
of the float32 table.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from medr3_jax.progress import waiting

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ExactIndex:
    """table [N_padded, D] sharded by rows over all mesh axes; rows >= num_rows are padding."""

    table: Array
    num_rows: int
    mesh: Mesh
    block_rows: int

    @classmethod
    def build(cls, table: np.ndarray | Array, mesh: Mesh, *, block_rows: int = 4096, dtype=None) -> ExactIndex:
        """Pads rows to devices x blocks and places them; `dtype` defaults to the table's."""
        table = np.asarray(table)
        n, d = table.shape
        return cls.from_rows(lambda lo, hi: table[lo:hi], n, d, dtype or table.dtype, mesh, block_rows=block_rows)

    @classmethod
    def from_rows(cls, read_rows: Callable[[int, int], np.ndarray], num_rows: int, dim: int, dtype, mesh: Mesh, *,
                  block_rows: int = 4096) -> ExactIndex:  # fmt: skip
        """The index of a table too large to hold twice: each device's slice of rows is read by
        `read_rows(lo, hi)` (e.g. from memory-mapped shard files) straight into its buffer, so
        the host never holds the whole table; rows past `num_rows` are zero padding."""
        devices = mesh.devices.size
        per_device = -(-num_rows // devices)
        block_rows = max(1, min(block_rows, per_device))
        per_device = -(-per_device // block_rows) * block_rows
        shape = (per_device * devices, dim)

        def slice_rows(index: tuple[slice, ...]) -> np.ndarray:
            lo, hi, _ = index[0].indices(shape[0])
            out = np.zeros((hi - lo, dim), dtype)
            if lo < num_rows:
                out[: min(hi, num_rows) - lo] = read_rows(lo, min(hi, num_rows))
            return out

        sharding = NamedSharding(mesh, P(mesh.axis_names, None))
        with waiting(f"reading the {num_rows}-row table onto {devices} device(s)"):
            table = jax.make_array_from_callback(shape, sharding, slice_rows)
        return cls(table=table, num_rows=num_rows, mesh=mesh, block_rows=block_rows)

    def search(self, queries: np.ndarray | Array, k: int) -> tuple[Array, Array]:
        """Top-k rows by inner product for each query [Q,D] -> (ids [Q,k] int32, scores [Q,k] f32),
        best first (the same order of results as the other backends)."""
        if not 0 < k <= self.num_rows:
            raise ValueError(f"k={k} must be in [1, {self.num_rows}] (the table's rows)")
        queries = jnp.asarray(queries, jnp.float32)
        scores, ids = _search(self.table, queries, k, self.num_rows, self.block_rows, self.mesh)
        return ids, scores


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _search(table: Array, queries: Array, k: int, num_rows: int, block_rows: int, mesh: Mesh) -> tuple[Array, Array]:
    axes = mesh.axis_names

    def local(rows: Array, q: Array) -> tuple[Array, Array]:
        shard = jax.lax.axis_index(axes)
        first = shard * rows.shape[0]
        blocks = rows.reshape(-1, block_rows, rows.shape[1])
        init = (jnp.full((q.shape[0], k), -jnp.inf, jnp.float32), jnp.full((q.shape[0], k), -1, jnp.int32))

        def scan_block(carry, xs):
            best_s, best_i = carry
            block, start = xs
            scores = jnp.einsum("QD,RD->QR", q, block.astype(jnp.float32))
            ids = first + start + jnp.arange(block_rows, dtype=jnp.int32)
            scores = jnp.where(ids[None, :] < num_rows, scores, -jnp.inf)  # padding rows never win
            cand_s = jnp.concatenate([best_s, scores], axis=1)
            cand_i = jnp.concatenate([best_i, jnp.broadcast_to(ids, scores.shape)], axis=1)
            top_s, pos = jax.lax.top_k(cand_s, k)
            return (top_s, jnp.take_along_axis(cand_i, pos, axis=1)), None

        starts = jnp.arange(blocks.shape[0], dtype=jnp.int32) * block_rows
        (best_s, best_i), _ = jax.lax.scan(scan_block, init, (blocks, starts))
        all_s = jax.lax.all_gather(best_s, axes, axis=1, tiled=True)  # [Q, devices*k]
        all_i = jax.lax.all_gather(best_i, axes, axis=1, tiled=True)
        top_s, pos = jax.lax.top_k(all_s, k)
        return top_s, jnp.take_along_axis(all_i, pos, axis=1)

    fn = jax.shard_map(local, mesh=mesh, in_specs=(P(axes, None), P()), out_specs=(P(), P()), check_vma=False)
    return fn(table, queries)
