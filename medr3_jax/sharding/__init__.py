"""Device mesh, parameter partition rules and multi-host start-up.

initialize()                                   # no-op on one process
mesh = make_mesh("data=1,fsdp=-1,tensor=1")
params = shard_array_tree(params, tree_shardings(params, mesh))
"""

from medr3_jax.sharding.distributed import (
    add_process_flags,
    host_local_to_global,
    initialize,
    initialize_from,
    is_primary,
    sync,
    to_host,
)
from medr3_jax.sharding.mesh import DEFAULT_MESH_SPEC, MESH_AXES, make_mesh, parse_mesh_spec
from medr3_jax.sharding.rules import (
    BATCH_AXES,
    DECODER_RULES,
    KV_CACHE_SPEC,
    batch_spec,
    fit_spec,
    kv_cache_spec,
    param_shardings,
    path_to_str,
    shard_array_tree,
    spec_for,
    tree_partition_specs,
    tree_shardings,
)

__all__ = [
    "BATCH_AXES",
    "DECODER_RULES",
    "DEFAULT_MESH_SPEC",
    "KV_CACHE_SPEC",
    "MESH_AXES",
    "add_process_flags",
    "batch_spec",
    "fit_spec",
    "host_local_to_global",
    "initialize",
    "initialize_from",
    "is_primary",
    "kv_cache_spec",
    "make_mesh",
    "param_shardings",
    "parse_mesh_spec",
    "path_to_str",
    "shard_array_tree",
    "spec_for",
    "sync",
    "to_host",
    "tree_partition_specs",
    "tree_shardings",
]
