"""Reads a LLaMA-architecture GGUF file (the bundled SmolLM2 demo model) as HF tensors.

A GGUF names tensors the llama.cpp way, stores them quantised, and keeps the Q/K rows in
llama.cpp's RoPE permutation. `GGUFCheckpoint` hides all three: it answers HF tensor names
(`model.layers.0.self_attn.q_proj.weight`), HF layouts ([out, in]) and float32 values, one
tensor at a time from the memory-mapped file, and an HF `config.json`-style dict built
from the metadata, so `hf.py` loads it like any safetensors checkpoint.

    ckpt = open_gguf("/path/SmolLM2-135M-Instruct.Q4_1.gguf")
    cfg = ModelConfig.from_hf_config(ckpt.hf_config, source=ckpt.path)
    wq = ckpt.read("model.layers.0.self_attn.q_proj.weight")  # [N*H, D] float32
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

# llama.cpp per-layer tensor name (after `blk.{i}.`) -> HF name (after `model.layers.{i}.`).
_LAYER_NAMES: dict[str, str] = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES: dict[str, str] = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_RE = re.compile(r"^blk\.(\d+)\.(.+)$")
_SUPPORTED_ARCHS = ("llama",)


def open_reader(path: str) -> Any:
    """A `gguf.GGUFReader` on `path`; a missing file or a file that is not GGUF fails loudly."""
    import gguf  # noqa: PLC0415 - only GGUF users pay for the import

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such GGUF file")
    try:
        return gguf.GGUFReader(path, "r")
    except (ValueError, IndexError, OSError, UnicodeDecodeError) as err:
        # The reader reports a bad magic or a truncated file as a numpy reshape error.
        raise ValueError(f"{path}: not a readable GGUF file ({err})") from err


def read_field(reader: Any, key: str, default: Any = None) -> Any:
    """The decoded value of metadata field `key` (string, number, bool or list), or `default`."""
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def _shortest_float(value: float) -> float:
    """A float32 metadata value as the decimal it was written from (9.99999974e-06 -> 1e-05)."""
    return float(str(np.float32(value)))


class GGUFCheckpoint:
    """HF-named, dequantised float32 tensors of a LLaMA GGUF file, read lazily one at a time.

    Implements the `TensorSource` protocol of `medr3_jax.models.hf` (`path`, `keys`, `shape`,
    `read`) and carries `hf_config`, an HF `config.json` dict for `ModelConfig.from_hf_config`.
    """

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)
        self._reader = open_reader(self.path)
        arch = read_field(self._reader, "general.architecture")
        if arch not in _SUPPORTED_ARCHS:
            raise ValueError(
                f"{self.path}: general.architecture={arch!r} is not supported (supported: {list(_SUPPORTED_ARCHS)})"
            )
        self._tensors = {self._hf_name(t.name): t for t in self._reader.tensors}
        self.hf_config: dict[str, Any] = self._build_hf_config()
        self._check_shapes()

    def keys(self) -> list[str]:
        return list(self._tensors)

    def shape(self, key: str) -> tuple[int, ...]:
        """HF layout: [out, in] for linear weights, i.e. the GGUF dims reversed."""
        return tuple(int(d) for d in reversed(self._tensor(key).shape.tolist()))

    def read(self, key: str) -> np.ndarray:
        """Dequantises one tensor to float32 in HF layout, un-permuting Q/K rows."""
        import gguf  # noqa: PLC0415

        tensor = self._tensor(key)
        try:
            values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        except NotImplementedError as err:
            raise ValueError(
                f"{self.path}: tensor {tensor.name!r} has quantisation {tensor.tensor_type.name}, which gguf cannot dequantise"
            ) from err
        # A copy: F32 tensors come back as read-only views into the memory-mapped file.
        values = np.array(values, dtype=np.float32).reshape(self.shape(key))
        if key.endswith("self_attn.q_proj.weight"):
            values = _unpermute_rows(values, self.hf_config["num_attention_heads"])
        elif key.endswith("self_attn.k_proj.weight"):
            values = _unpermute_rows(values, self.hf_config["num_key_value_heads"])
        return values

    def __repr__(self) -> str:
        return f"GGUFCheckpoint({self.path!r}, {len(self._tensors)} tensors)"

    # ---- internals -----------------------------------------------------------------------
    def _tensor(self, key: str) -> Any:
        if key not in self._tensors:
            raise KeyError(f"{self.path}: no tensor {key!r} (the file has {len(self._tensors)} tensors)")
        return self._tensors[key]

    def _hf_name(self, name: str) -> str:
        if name in _GLOBAL_NAMES:
            return _GLOBAL_NAMES[name]
        match = _LAYER_RE.match(name)
        if match and match.group(2) in _LAYER_NAMES:
            return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}"
        if name == "rope_freqs.weight":
            raise ValueError(f"{self.path}: tensor 'rope_freqs.weight' (LLaMA-3 RoPE scaling) is not supported")
        raise ValueError(f"{self.path}: unknown tensor {name!r} for a LLaMA GGUF")

    def _need(self, key: str) -> Any:
        value = read_field(self._reader, key)
        if value is None:
            raise ValueError(f"{self.path}: missing metadata field {key!r}")
        return value

    def _build_hf_config(self) -> dict[str, Any]:
        """The HF `LlamaForCausalLM` config.json this GGUF was converted from."""
        hidden = int(self._need("llama.embedding_length"))
        heads = int(self._need("llama.attention.head_count"))
        head_dim = int(read_field(self._reader, "llama.attention.key_length", hidden // heads))
        rope_dim = int(read_field(self._reader, "llama.rope.dimension_count", head_dim))
        if rope_dim != head_dim:
            raise ValueError(
                f"{self.path}: llama.rope.dimension_count={rope_dim} != head_dim={head_dim} (partial RoPE)"
            )
        embed_rows = self.shape("model.embed_tokens.weight")[0]
        theta = _shortest_float(read_field(self._reader, "llama.rope.freq_base", 10000.0))
        cfg: dict[str, Any] = {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": int(read_field(self._reader, "llama.vocab_size", embed_rows)),
            "hidden_size": hidden,
            "intermediate_size": int(self._need("llama.feed_forward_length")),
            "num_hidden_layers": int(self._need("llama.block_count")),
            "num_attention_heads": heads,
            "num_key_value_heads": int(read_field(self._reader, "llama.attention.head_count_kv", heads)),
            "head_dim": head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": _shortest_float(self._need("llama.attention.layer_norm_rms_epsilon")),
            "rope_theta": theta,
            "rope_parameters": self._rope_parameters(theta),
            "max_position_embeddings": int(read_field(self._reader, "llama.context_length", 8192)),
            "tie_word_embeddings": "lm_head.weight" not in self._tensors,
            "attention_bias": False,
            "mlp_bias": False,
            "torch_dtype": "float32",
        }
        for hf_key, gguf_key in (
            ("bos_token_id", "bos_token_id"),
            ("eos_token_id", "eos_token_id"),
            ("pad_token_id", "padding_token_id"),
        ):
            value = read_field(self._reader, f"tokenizer.ggml.{gguf_key}")
            if value is not None:
                cfg[hf_key] = int(value)
        return cfg

    def _rope_parameters(self, theta: float) -> dict[str, Any]:
        kind = read_field(self._reader, "llama.rope.scaling.type", "none")
        if kind == "none":
            return {"rope_type": "default", "rope_theta": theta}
        if kind == "linear":
            factor = _shortest_float(self._need("llama.rope.scaling.factor"))
            return {"rope_type": "linear", "factor": factor, "rope_theta": theta}
        raise ValueError(f"{self.path}: llama.rope.scaling.type={kind!r} is not supported (none, linear)")

    def _check_shapes(self) -> None:
        """Every tensor has the shape the config implies; a mismatch names the tensor."""
        c = self.hf_config
        d, f, v, h = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["head_dim"]
        q, kv = c["num_attention_heads"] * h, c["num_key_value_heads"] * h
        want = {
            "input_layernorm.weight": (d,),
            "post_attention_layernorm.weight": (d,),
            "self_attn.q_proj.weight": (q, d),
            "self_attn.k_proj.weight": (kv, d),
            "self_attn.v_proj.weight": (kv, d),
            "self_attn.o_proj.weight": (d, q),
            "mlp.gate_proj.weight": (f, d),
            "mlp.up_proj.weight": (f, d),
            "mlp.down_proj.weight": (d, f),
            "model.embed_tokens.weight": (v, d),
            "model.norm.weight": (d,),
            "lm_head.weight": (v, d),
        }
        for key in self._tensors:
            suffix = key.split(".", 3)[-1] if key.startswith("model.layers.") else key
            if self.shape(key) != want[suffix]:
                raise ValueError(f"{self.path}: tensor {key!r} has shape {self.shape(key)}, expected {want[suffix]}")
        layers = {int(k.split(".")[2]) for k in self._tensors if k.startswith("model.layers.")}
        if layers != set(range(c["num_hidden_layers"])):
            raise ValueError(
                f"{self.path}: layers {sorted(layers)} do not match llama.block_count={c['num_hidden_layers']}"
            )


def _unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undoes llama.cpp's `permute(w, n_head, n_head_kv)`: per head, rows go from
    interleaved (x0, y0, x1, y1, ...) pairs back to HF's rotate-half halves (x..., y...)."""
    out_dim = w.shape[0]
    half = out_dim // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def open_gguf(path: str) -> GGUFCheckpoint:
    """Opens a LLaMA GGUF file as a lazy `TensorSource` with an `hf_config`."""
    return GGUFCheckpoint(path)
