"""Partition rules: every decoder parameter of the tested presets gets the layout we intend,
and device_put with those shardings gives the per-device shard shapes the specs say."""

from __future__ import annotations

import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from medr3_jax.models.config import ModelConfig, preset
from medr3_jax.sharding import (
    KV_CACHE_SPEC,
    batch_spec,
    kv_cache_spec,
    make_mesh,
    shard_array_tree,
    spec_for,
    tree_partition_specs,
    tree_shardings,
)

# Hand-written layout: (path, axis letters per dim, mesh axis per dim).
_LAYOUT: tuple[tuple[str, str, tuple[str | None, ...]], ...] = (
    ("embedding", "VD", ("tensor", "fsdp")),
    ("layers/attn_norm", "LD", (None, None)),
    ("layers/q_proj", "LDNH", (None, "fsdp", "tensor", None)),
    ("layers/q_bias", "LNH", (None, "tensor", None)),
    ("layers/k_proj", "LDKH", (None, "fsdp", "tensor", None)),
    ("layers/k_bias", "LKH", (None, "tensor", None)),
    ("layers/v_proj", "LDKH", (None, "fsdp", "tensor", None)),
    ("layers/v_bias", "LKH", (None, "tensor", None)),
    ("layers/o_proj", "LNHD", (None, "tensor", None, "fsdp")),
    ("layers/mlp_norm", "LD", (None, None)),
    ("layers/gate_proj", "LDF", (None, "fsdp", "tensor")),
    ("layers/up_proj", "LDF", (None, "fsdp", "tensor")),
    ("layers/down_proj", "LFD", (None, "tensor", "fsdp")),
    ("final_norm", "D", (None,)),
    ("lm_head", "DV", ("fsdp", "tensor")),
)


def _dims(cfg: ModelConfig) -> dict[str, int]:
    return {
        "V": cfg.vocab_size,
        "D": cfg.hidden_size,
        "F": cfg.intermediate_size,
        "L": cfg.num_layers,
        "N": cfg.num_heads,
        "K": cfg.num_kv_heads,
        "H": cfg.head_dim,
    }


def _param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The decoder's flat parameter shapes, from the config alone (no model is built)."""
    dims = _dims(cfg)
    shapes = {path: tuple(dims[a] for a in letters) for path, letters, _ in _LAYOUT}
    if not cfg.qkv_bias:
        for name in ("q_bias", "k_bias", "v_bias"):
            del shapes[f"layers/{name}"]
    if cfg.tie_word_embeddings:
        del shapes["lm_head"]
    return shapes


def _expected(path: str, shape: tuple[int, ...], mesh: jax.sharding.Mesh) -> P:
    """The layout table, with an axis dropped where it does not divide the dim."""
    axes = dict((p, a) for p, _, a in _LAYOUT)[path]
    return P(*(a if a is None or size % mesh.shape[a] == 0 else None for a, size in zip(axes, shape)))


def _tree(cfg: ModelConfig) -> dict:
    """Nested dict of ShapeDtypeStructs in the decoder's layout."""
    tree: dict = {}
    for path, shape in _param_shapes(cfg).items():
        *parents, leaf = path.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = jax.ShapeDtypeStruct(shape, jnp.float32)
    return tree


@pytest.mark.parametrize("name", ["tiny", "smollm2_135m_instruct", "llama3_1_8b_instruct", "qwen2_5_7b"])
@pytest.mark.parametrize("mesh_spec", ["data=2,fsdp=2,tensor=2", "fsdp=4,tensor=2", "fsdp=8"])
def test_every_preset_param_gets_its_spec(name: str, mesh_spec: str) -> None:
    cfg = preset(name)
    mesh = make_mesh(mesh_spec)
    shapes = _param_shapes(cfg)
    for path, shape in shapes.items():
        assert spec_for(path, shape, mesh) == _expected(path, shape, mesh), path
    specs = tree_partition_specs(_tree(cfg), mesh)
    leaves = jax.tree_util.tree_leaves_with_path(specs, is_leaf=lambda x: isinstance(x, P))
    flat = {"/".join(str(k.key) for k in kp): s for kp, s in leaves}
    assert flat == {path: _expected(path, shape, mesh) for path, shape in shapes.items()}


def test_llama_8b_on_tensor_2_is_fully_split() -> None:
    mesh = make_mesh("fsdp=4,tensor=2")
    cfg = preset("llama3_1_8b_instruct")
    assert spec_for("layers/k_proj", _param_shapes(cfg)["layers/k_proj"], mesh) == P(None, "fsdp", "tensor", None)
    assert spec_for("lm_head", (4096, 128256), mesh) == P("fsdp", "tensor")


def test_indivisible_dim_replicates_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    mesh = make_mesh("fsdp=4,tensor=2")
    shape = (30, 576, 3, 64)  # SmolLM2's 3 kv heads on tensor=2
    with caplog.at_level(logging.WARNING, logger="medr3_jax.sharding.rules"):
        for _ in range(3):
            assert spec_for("warn_test/layers/k_proj", shape, mesh) == P(None, "fsdp", None, None)
    hits = [r for r in caplog.records if "warn_test/layers/k_proj" in r.getMessage()]
    assert len(hits) == 1
    assert "dim 2" in hits[0].getMessage() and "'tensor'" in hits[0].getMessage()


def test_unmatched_path_raises() -> None:
    mesh = make_mesh("fsdp=8")
    with pytest.raises(ValueError, match="layers/rotary_inv_freq"):
        spec_for("layers/rotary_inv_freq", (2, 8), mesh)
    with pytest.raises(ValueError, match="no partition rule"):
        tree_partition_specs({"embedding": np.zeros((8, 8)), "mystery": np.zeros((4,))}, mesh)
    with pytest.raises(ValueError, match="has 4 dims"):
        spec_for("layers/q_proj", (64, 4, 16), mesh)  # unstacked: rule expects [L,D,N,H]


def test_prefixed_paths_and_scalars() -> None:
    mesh = make_mesh("fsdp=4,tensor=2")
    assert spec_for("opt_state/0/mu/layers/up_proj", (2, 64, 128), mesh) == P(None, "fsdp", "tensor")
    assert spec_for("opt_state/0/count", (), mesh) == P()
    with pytest.raises(ValueError, match="my_embedding"):  # a prefix must end in '/'
        spec_for("my_embedding", (8, 8), mesh)


def _shard_shape(shape: tuple[int, ...], spec: P, mesh: jax.sharding.Mesh) -> tuple[int, ...]:
    def parts(entry) -> int:
        names = () if entry is None else (entry,) if isinstance(entry, str) else entry
        return math.prod(mesh.shape[n] for n in names)

    spec = tuple(spec) + (None,) * (len(shape) - len(spec))
    return tuple(size // parts(e) for size, e in zip(shape, spec))


@pytest.mark.parametrize("mesh_spec", ["data=2,fsdp=2,tensor=2", "fsdp=4,tensor=2"])
def test_device_put_gives_the_rule_shard_shapes(mesh_spec: str) -> None:
    mesh = make_mesh(mesh_spec)
    cfg = preset("tiny", num_heads=6, num_kv_heads=3, qkv_bias=True)  # 3 kv heads: fallback
    shapes = _param_shapes(cfg)
    tree = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), _tree(cfg))
    placed = shard_array_tree(tree, tree_shardings(tree, mesh))
    flat = {"/".join(str(k.key) for k in kp): x for kp, x in jax.tree_util.tree_leaves_with_path(placed)}
    assert set(flat) == set(shapes)
    for path, arr in flat.items():
        want = _shard_shape(shapes[path], _expected(path, shapes[path], mesh), mesh)
        assert len(arr.addressable_shards) == 8
        for shard in arr.addressable_shards:
            assert shard.data.shape == want, (path, shard.data.shape, want)
    assert flat["layers/k_proj"].addressable_shards[0].data.shape[2] == 3


class _Layers(nnx.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        l, d, f = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size
        n, k, h = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.attn_norm = nnx.Param(jnp.ones((l, d)))
        self.q_proj = nnx.Param(jnp.zeros((l, d, n, h)))
        self.k_proj = nnx.Param(jnp.zeros((l, d, k, h)))
        self.down_proj = nnx.Param(jnp.zeros((l, f, d)))


class _Decoder(nnx.Module):
    """A stand-in with the decoder's state paths (the real one lives in models/)."""

    def __init__(self, cfg: ModelConfig) -> None:
        self.embedding = nnx.Param(jnp.zeros((cfg.vocab_size, cfg.hidden_size)))
        self.layers = _Layers(cfg)
        self.final_norm = nnx.Param(jnp.ones((cfg.hidden_size,)))


def test_nnx_state_specs_and_placement() -> None:
    mesh = make_mesh("data=2,fsdp=2,tensor=2")
    cfg = preset("tiny")
    abstract = nnx.state(nnx.eval_shape(lambda: _Decoder(cfg)))
    specs = tree_partition_specs(abstract, mesh)
    assert isinstance(specs, nnx.State)
    assert specs["layers"]["q_proj"].get_value() == P(None, "fsdp", "tensor", None)
    assert specs["embedding"].get_value() == P("tensor", "fsdp")
    model = _Decoder(cfg)
    placed = shard_array_tree(nnx.state(model), tree_shardings(nnx.state(model), mesh))
    nnx.update(model, placed)
    q = model.layers.q_proj[...]
    assert q.sharding.spec == P(None, "fsdp", "tensor", None)
    assert q.addressable_shards[0].data.shape == (2, 32, 2, 16)


def test_activation_and_kv_cache_specs() -> None:
    assert batch_spec(2) == P(("data", "fsdp"), None)
    assert batch_spec(1) == P(("data", "fsdp"))
    with pytest.raises(ValueError):
        batch_spec(0)
    mesh = make_mesh("data=2,fsdp=2,tensor=2")
    assert kv_cache_spec((2, 8, 2, 16, 16), mesh) == KV_CACHE_SPEC
    assert kv_cache_spec((2, 2, 3, 16, 16), mesh) == P(None, "data", None, None, None)
    assert kv_cache_spec((2, 1, 2, 16, 16), mesh) == P(None, None, "tensor", None, None)
    with pytest.raises(ValueError, match=r"L,B,K,H,S\] / \[L,B,K,S,H"):
        kv_cache_spec((8, 16, 2, 16), mesh)
