"""Partition rules: parameter path -> PartitionSpec, for FSDP ('fsdp') + tensor parallelism.

    specs = tree_partition_specs(nnx.state(model), mesh)        # same tree, PartitionSpecs
    params = shard_array_tree(params, tree_shardings(params, mesh))

A path is the pytree key path joined by '/', e.g. 'layers/q_proj' (nnx.Variable's own
'value' attribute is dropped). The first rule whose regex *fully* matches wins; every rule
tolerates a prefix (an optimizer state's 'opt_state/0/mu/layers/q_proj' matches as well). A
path no rule matches is an error: silent replication would hide an 8B model's worth of
memory. Scalars (e.g. an optimizer's step count) are replicated without a rule: there is
nothing to shard.

Layout (Megatron column/row split on 'tensor', ZeRO-3 style on 'fsdp' over D; the stacked
layer axis L is never sharded, so a scan over layers slices locally):
  q/k/v_proj [L,D,N|K,H]: D on fsdp, heads on tensor    o_proj [L,N,H,D]: heads on tensor, D on fsdp
  gate/up    [L,D,F]:     D on fsdp, F on tensor        down   [L,F,D]:   F on tensor, D on fsdp
  embedding  [V,D]:       V on tensor, D on fsdp        lm_head [D,V]:    D on fsdp, V on tensor
  biases [L,N|K,H]: heads on tensor; norms replicated.
A dim not divisible by its mesh axes drops them (replicates) with one warning per path/dim,
e.g. SmolLM2's 3 kv heads on tensor=2.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from medr3_jax.models.config import ModelConfig
from medr3_jax.models.transformer import param_shapes

logger = logging.getLogger(__name__)

Rules = Sequence[tuple[str, P]]

_ANY = r"(?:.*/)?"  # any prefix: a wrapping module, an optimizer-state path
_L = None  # the stacked layer axis: never sharded

DECODER_RULES: tuple[tuple[str, P], ...] = (
    (_ANY + r"embedding", P("tensor", "fsdp")),
    (_ANY + r"layers/(?:attn_norm|mlp_norm)", P(_L, None)),
    (_ANY + r"layers/[qkv]_proj", P(_L, "fsdp", "tensor", None)),
    (_ANY + r"layers/[qkv]_bias", P(_L, "tensor", None)),
    (_ANY + r"layers/o_proj", P(_L, "tensor", None, "fsdp")),
    (_ANY + r"layers/(?:gate_proj|up_proj)", P(_L, "fsdp", "tensor")),
    (_ANY + r"layers/down_proj", P(_L, "tensor", "fsdp")),
    (_ANY + r"final_norm", P(None)),
    (_ANY + r"lm_head", P("fsdp", "tensor")),
)

BATCH_AXES: tuple[str, str] = ("data", "fsdp")
# KV cache keys [L,B,K,H,S] / values [L,B,K,S,H]: batch over data+fsdp, kv heads over tensor
# (as k/v_proj's outputs).
KV_CACHE_SPEC = P(None, BATCH_AXES, "tensor", None, None)

_warned: set[tuple[str, int, str]] = set()


def spec_for(path: str, shape: Sequence[int], mesh: Mesh, rules: Rules = DECODER_RULES) -> P:
    """The PartitionSpec of the array at `path` with `shape`: first full-matching rule wins.

    Raises ValueError naming the path when no rule matches or the rule has more dims than
    the array. Mesh axes that do not divide a dim are dropped for that dim (with a warning).
    """
    if len(shape) == 0:
        return P()
    for pattern, spec in rules:
        if re.fullmatch(pattern, path):
            if len(spec) > len(shape):
                raise ValueError(
                    f"partition rule {pattern!r} -> {spec} has {len(spec)} dims, but {path!r} has shape {tuple(shape)}"
                )
            return fit_spec(spec, shape, mesh, path)
    raise ValueError(f"no partition rule matches parameter {path!r} (shape {tuple(shape)}); add one to the rules")


def fit_spec(spec: P, shape: Sequence[int], mesh: Mesh, name: str = "array") -> P:
    """`spec` with, per dim, trailing mesh axes dropped until their product divides the dim."""
    dims: list[Any] = []
    for dim, entry in enumerate(spec):
        axes = _as_axes(entry)
        for axis in axes:
            if axis not in mesh.shape:
                raise ValueError(f"{name}: spec {spec} names axis {axis!r}, mesh has {tuple(mesh.shape)}")
        kept = list(axes)
        while kept and shape[dim] % math.prod(mesh.shape[a] for a in kept):
            _warn_once(name, dim, tuple(kept), shape[dim], mesh)
            kept.pop()
        dims.append(_from_axes(kept))
    return P(*dims)


def _as_axes(entry: Any) -> tuple[str, ...]:
    if entry is None:
        return ()
    return tuple(entry) if isinstance(entry, (tuple, list)) else (entry,)


def _from_axes(kept: list[str]) -> Any:
    """Back to a spec entry: None, one axis name, or a tuple of them."""
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else tuple(kept)


def _warn_once(name: str, dim: int, axes: tuple[str, ...], size: int, mesh: Mesh) -> None:
    key = (name, dim, axes[-1])
    if key not in _warned:
        _warned.add(key)
        logger.warning(
            "%s: dim %d (size %d) does not split over mesh axes %s (%d ways); dropping axis %r for that dim",
            name,
            dim,
            size,
            axes,
            math.prod(mesh.shape[a] for a in axes),
            axes[-1],
        )


def path_to_str(key_path: Sequence[Any]) -> str:
    """A jax key path as 'a/b/0'; drops the 'value' attribute that nnx.Variable adds."""
    parts: list[str] = []
    for key in key_path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(key.name)
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            parts.append(str(key.key))
        else:
            parts.append(str(key))
    if parts and isinstance(key_path[-1], jax.tree_util.GetAttrKey) and parts[-1] == "value":
        parts.pop()
    return "/".join(parts)


def tree_partition_specs(tree: Any, mesh: Mesh, rules: Rules = DECODER_RULES) -> Any:
    """The same pytree (dicts, nnx.State with Variables, ...) with a PartitionSpec per array.

    Leaves may be arrays or ShapeDtypeStructs (e.g. from `nnx.eval_shape`); an nnx.State
    keeps its Variables, whose value becomes the spec (as `nnx.get_partition_spec` does).
    """
    return jax.tree_util.tree_map_with_path(lambda kp, x: _leaf_spec(kp, x, mesh, rules), tree)


def tree_shardings(tree: Any, mesh: Mesh, rules: Rules = DECODER_RULES) -> Any:
    """Like `tree_partition_specs`, with a NamedSharding on `mesh` per array."""
    return jax.tree_util.tree_map_with_path(lambda kp, x: NamedSharding(mesh, _leaf_spec(kp, x, mesh, rules)), tree)


def _leaf_spec(key_path: Sequence[Any], leaf: Any, mesh: Mesh, rules: Rules) -> P:
    shape = leaf.shape if hasattr(leaf, "shape") else np.shape(leaf)
    return spec_for(path_to_str(key_path), shape, mesh, rules)


def batch_spec(ndim: int) -> P:
    """Activations / inputs: first dim (batch) over ('data', 'fsdp'), the rest replicated."""
    if ndim < 1:
        raise ValueError(f"batch_spec needs at least one dim, got ndim={ndim}")
    return P(BATCH_AXES, *([None] * (ndim - 1)))


def kv_cache_spec(shape: Sequence[int], mesh: Mesh) -> P:
    """KV_CACHE_SPEC for cache keys [L,B,K,H,S] or values [L,B,K,S,H], with axes dropped where
    they do not divide."""
    if len(shape) != len(KV_CACHE_SPEC):
        raise ValueError(f"kv cache must be [L,B,K,H,S] / [L,B,K,S,H], got shape {tuple(shape)}")
    return fit_spec(KV_CACHE_SPEC, shape, mesh, "kv_cache")


def shard_array_tree(tree: Any, shardings: Any) -> Any:
    """Places every array of `tree` on its sharding (a matching pytree, or one sharding)."""
    return jax.device_put(tree, shardings)


def param_shardings(config: ModelConfig, mesh: Mesh, rules: Rules = DECODER_RULES) -> dict[str, NamedSharding]:
    """{param path: NamedSharding} for a Decoder of `config`, from shapes alone (for loading)."""
    return {
        path: NamedSharding(mesh, spec_for(path, shape, mesh, rules)) for path, shape in param_shapes(config).items()
    }
