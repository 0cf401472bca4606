"""HF checkpoints <-> Decoder parameters, as one conversion table plus asserts.

Loading streams one parameter at a time from a `TensorSource` (a safetensors directory, or
the bundled GGUF) straight onto its target sharding: the host holds at most one stacked
parameter, never the model twice. Saving writes HF safetensors (+ index json when sharded)
and a config.json that transformers loads.

    params = load_params(SafetensorsDir("/ckpt/llama"), config, shardings)
    save_hf(model, "/out/hf_dir")
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Callable, Iterator, Mapping, Protocol

import jax
import jax.experimental.multihost_utils
import ml_dtypes
import numpy as np
from flax import nnx

from medr3_jax.models.config import ModelConfig
from medr3_jax.models.transformer import Decoder, abstract_decoder, param_shapes
from medr3_jax.progress import Progress

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint we cannot load; the message names the file and the tensor."""


class TensorSource(Protocol):
    """Named tensors in HF layout, read lazily one at a time."""

    path: str

    def keys(self) -> list[str]: ...

    def shape(self, key: str) -> tuple[int, ...]: ...

    def read(self, key: str) -> np.ndarray: ...


# ---- the conversion table -------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Rule:
    """HF key (with `{i}` for the layer) <-> our path; `to_ours`/`to_hf` reshape one tensor."""

    hf_key: str
    path: str
    to_ours: Callable[[np.ndarray, ModelConfig], np.ndarray]
    to_hf: Callable[[np.ndarray, ModelConfig], np.ndarray]

    @property
    def layered(self) -> bool:
        return "{i}" in self.hf_key


def _same(x: np.ndarray, c: ModelConfig) -> np.ndarray:
    return x


def _t(x: np.ndarray, c: ModelConfig) -> np.ndarray:
    return x.T


def _in_heads(heads: Callable[[ModelConfig], int]) -> tuple[Callable, Callable]:
    """HF [heads*H, D] <-> ours [D, heads, H] (q/k/v projections)."""
    to_ours = lambda x, c: x.T.reshape(c.hidden_size, heads(c), c.head_dim)  # noqa: E731
    to_hf = lambda x, c: x.reshape(c.hidden_size, heads(c) * c.head_dim).T  # noqa: E731
    return to_ours, to_hf


def _bias(heads: Callable[[ModelConfig], int]) -> tuple[Callable, Callable]:
    """HF [heads*H] <-> ours [heads, H]."""
    return (lambda x, c: x.reshape(heads(c), c.head_dim)), (lambda x, c: x.reshape(-1))


_N = lambda c: c.num_heads  # noqa: E731
_K = lambda c: c.num_kv_heads  # noqa: E731
_L = "model.layers.{i}."


def _rules(config: ModelConfig) -> list[_Rule]:
    rules = [
        _Rule("model.embed_tokens.weight", "embedding", _same, _same),
        _Rule("model.norm.weight", "final_norm", _same, _same),
        _Rule(_L + "input_layernorm.weight", "layers/attn_norm", _same, _same),
        _Rule(_L + "post_attention_layernorm.weight", "layers/mlp_norm", _same, _same),
        _Rule(_L + "self_attn.q_proj.weight", "layers/q_proj", *_in_heads(_N)),
        _Rule(_L + "self_attn.k_proj.weight", "layers/k_proj", *_in_heads(_K)),
        _Rule(_L + "self_attn.v_proj.weight", "layers/v_proj", *_in_heads(_K)),
        _Rule(
            _L + "self_attn.o_proj.weight",
            "layers/o_proj",
            lambda x, c: x.T.reshape(c.num_heads, c.head_dim, c.hidden_size),
            lambda x, c: x.reshape(c.num_heads * c.head_dim, c.hidden_size).T,
        ),
        _Rule(_L + "mlp.gate_proj.weight", "layers/gate_proj", _t, _t),
        _Rule(_L + "mlp.up_proj.weight", "layers/up_proj", _t, _t),
        _Rule(_L + "mlp.down_proj.weight", "layers/down_proj", _t, _t),
    ]
    if config.qkv_bias:
        rules += [
            _Rule(_L + "self_attn.q_proj.bias", "layers/q_bias", *_bias(_N)),
            _Rule(_L + "self_attn.k_proj.bias", "layers/k_bias", *_bias(_K)),
            _Rule(_L + "self_attn.v_proj.bias", "layers/v_bias", *_bias(_K)),
        ]
    if not config.tie_word_embeddings:
        rules.append(_Rule("lm_head.weight", "lm_head", _t, _t))
    shapes = param_shapes(config)
    assert sorted(r.path for r in rules) == sorted(shapes), "conversion table out of sync with Decoder"
    return rules


def hf_keys(config: ModelConfig) -> list[str]:
    """Every HF tensor name a checkpoint of this config must hold."""
    return [k for r in _rules(config) for k in _expand(r, config)]


def _expand(rule: _Rule, config: ModelConfig) -> list[str]:
    return [rule.hf_key.format(i=i) for i in range(config.num_layers)] if rule.layered else [rule.hf_key]


# ---- sources --------------------------------------------------------------------------------
class SafetensorsDir:
    """An HF model directory: `model.safetensors`, or shards listed in `model.safetensors.index.json`."""

    def __init__(self, path: str | os.PathLike[str]):
        from safetensors import safe_open  # noqa: PLC0415

        self.path = os.fspath(path)
        index = os.path.join(self.path, "model.safetensors.index.json")
        single = os.path.join(self.path, "model.safetensors")
        # What a missing tensor is reported against: the index, or the single file.
        self.location = index if os.path.exists(index) else single
        if os.path.exists(index):
            with open(index, encoding="utf-8") as fh:
                weight_map: dict[str, str] = json.load(fh)["weight_map"]
            files = sorted(set(weight_map.values()))
        elif os.path.exists(single):
            files, weight_map = ["model.safetensors"], {}
        else:
            raise CheckpointError(f"{self.path}: neither model.safetensors nor model.safetensors.index.json found")
        self._handles: dict[str, Any] = {}
        self._where: dict[str, str] = {}
        for name in files:
            file = os.path.join(self.path, name)
            if not os.path.exists(file):
                raise CheckpointError(f"{index}: lists shard {name}, which does not exist")
            handle = safe_open(file, framework="numpy")
            self._handles[file] = handle
            for key in handle.keys():
                self._where[key] = file

    def keys(self) -> list[str]:
        return list(self._where)

    def file_of(self, key: str) -> str:
        return self._where[key]

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._handles[self._where[key]].get_slice(key).get_shape())

    def read(self, key: str) -> np.ndarray:
        return self._handles[self._where[key]].get_tensor(key)


# ---- loading --------------------------------------------------------------------------------
def _check_source(source: TensorSource, config: ModelConfig) -> None:
    """Every expected tensor present with the expected HF shape, before anything is read."""
    present = set(source.keys())
    for rule in _rules(config):
        ours = param_shapes(config)[rule.path]
        expected = rule.to_hf(np.empty(ours[1:] if rule.layered else ours, np.bool_), config).shape
        for key in _expand(rule, config):
            if key not in present:
                raise CheckpointError(f"{_where(source, key)}: missing tensor {key!r} (needed for {rule.path})")
            if tuple(source.shape(key)) != tuple(expected):
                raise CheckpointError(
                    f"{_where(source, key)}: tensor {key!r} has shape {tuple(source.shape(key))}, "
                    f"expected {tuple(expected)} for this config"
                )
    ignored = present - set(hf_keys(config)) - {"lm_head.weight"}
    if ignored:
        log.warning(
            "%s: ignoring %d tensors not used by the model, e.g. %s", source.path, len(ignored), sorted(ignored)[:3]
        )


def _where(source: TensorSource, key: str) -> str:
    """The file that holds `key`, or (missing key) the file that should have listed it."""
    file_of = getattr(source, "file_of", None)
    if file_of and key in source.keys():
        return file_of(key)
    return getattr(source, "location", source.path)


def _host_param(source: TensorSource, rule: _Rule, config: ModelConfig, dtype: Any) -> np.ndarray:
    """One of our parameters on the host, built layer by layer from HF tensors."""
    if not rule.layered:
        return np.asarray(rule.to_ours(source.read(rule.hf_key), config), dtype=dtype)
    shape = param_shapes(config)[rule.path]
    out = np.empty(shape, dtype)
    for i, key in enumerate(_expand(rule, config)):
        out[i] = rule.to_ours(source.read(key), config)
    return out


def load_params(
    source: TensorSource, config: ModelConfig, shardings: Mapping[str, jax.sharding.Sharding] | None = None
) -> dict[str, jax.Array]:
    """Our flat params {path: array}, each placed on `shardings[path]` (default: device 0)."""
    _check_source(source, config)
    dtype = np.dtype(ml_dtypes.bfloat16) if config.param_dtype == "bfloat16" else np.dtype(config.param_dtype)
    out: dict[str, jax.Array] = {}
    rules = _rules(config)
    shapes = param_shapes(config)
    total = sum(int(np.prod(shapes[r.path])) * dtype.itemsize for r in rules)
    with Progress(f"loading weights ({config.param_dtype})", total, "B") as bar:
        for rule in rules:
            host = _host_param(source, rule, config, dtype)
            sharding = shardings[rule.path] if shardings else jax.sharding.SingleDeviceSharding(jax.devices()[0])
            out[rule.path] = jax.make_array_from_callback(host.shape, sharding, lambda idx, h=host: h[idx])
            bar.update(host.nbytes)
            del host
    return out


def load_decoder(
    source: TensorSource, config: ModelConfig, shardings: Mapping[str, jax.sharding.Sharding] | None = None
) -> Decoder:
    """A Decoder whose parameters come from `source`, never materialised at random first."""
    return assemble_decoder(config, load_params(source, config, shardings))


def assemble_decoder(config: ModelConfig, params: Mapping[str, jax.Array]) -> Decoder:
    """A Decoder around given flat params {path: array} (placed as they are; no init)."""
    graphdef, _ = abstract_decoder(config)
    if sorted(params) != sorted(param_shapes(config)):
        raise CheckpointError(f"params {sorted(params)} do not match the Decoder's {sorted(param_shapes(config))}")
    tree: dict[str, Any] = {}
    for path, value in params.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = nnx.Param(value)
    return nnx.merge(graphdef, nnx.State(tree))


def flat_params(model: Decoder) -> dict[str, jax.Array]:
    """{path: array} of a Decoder's parameters ('layers/q_proj', ...)."""
    pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    out: dict[str, jax.Array] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for k, v in node.items():
            path = f"{prefix}{k}"
            if isinstance(v, Mapping):
                walk(v, path + "/")
            else:
                out[path] = v

    walk(pure, "")
    return out


# ---- saving ---------------------------------------------------------------------------------
def hf_tensors(model: Decoder) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, host array) pairs, one parameter gathered at a time."""
    config = model.config
    params = flat_params(model)
    for rule in _rules(config):
        host = np.asarray(jax.experimental.multihost_utils.process_allgather(params[rule.path], tiled=True))
        if rule.layered:
            for i, key in enumerate(_expand(rule, config)):
                yield key, np.ascontiguousarray(rule.to_hf(host[i], config))
        else:
            yield rule.hf_key, np.ascontiguousarray(rule.to_hf(host, config))


def _plan_shards(config: ModelConfig, itemsize: int, max_shard_bytes: int) -> tuple[list[list[str]], int]:
    """HF keys (in write order) grouped into files of at most `max_shard_bytes`; total bytes."""
    sizes: dict[str, int] = {}
    for rule in _rules(config):
        shape = param_shapes(config)[rule.path]
        per = int(np.prod(shape[1:] if rule.layered else shape)) * itemsize
        sizes |= {key: per for key in _expand(rule, config)}
    groups: list[list[str]] = [[]]
    total = 0
    for key, nbytes in sizes.items():
        if groups[-1] and total + nbytes > max_shard_bytes:
            groups.append([])
            total = 0
        groups[-1].append(key)
        total += nbytes
    return groups, sum(sizes.values())


def save_hf(model: Decoder, out_dir: str | os.PathLike[str], *, max_shard_bytes: int = 4 << 30) -> None:
    """Writes `config.json` and safetensors shards (+ index json when more than one).

    Streams: the host holds one file's tensors at a time. On multi-host every process takes
    part in the gathers; process 0 writes.
    """
    from safetensors.numpy import save_file  # noqa: PLC0415

    out = os.fspath(out_dir)
    primary = jax.process_index() == 0
    if primary:
        os.makedirs(out, exist_ok=True)
    config = model.config
    itemsize = jax.numpy.dtype(config.param_dtype).itemsize
    groups, total_bytes = _plan_shards(config, itemsize, max_shard_bytes)
    names = (
        ["model.safetensors"]
        if len(groups) == 1
        else [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
    )
    file_of = {key: name for name, keys in zip(names, groups) for key in keys}
    pending: dict[str, np.ndarray] = {}
    for key, tensor in hf_tensors(model):
        pending[key] = tensor
        group = names.index(file_of[key])
        if len(pending) == len(groups[group]):
            if primary:
                save_file(pending, os.path.join(out, names[group]), metadata={"format": "pt"})
            pending = {}
    if not primary:
        return
    if len(groups) > 1:
        index = {"metadata": {"total_size": total_bytes}, "weight_map": file_of}
        with open(os.path.join(out, "model.safetensors.index.json"), "w", encoding="utf-8") as fh:
            json.dump(index, fh, indent=2)
    with open(os.path.join(out, "config.json"), "w", encoding="utf-8") as fh:
        json.dump(config.to_hf_config(), fh, indent=2)
