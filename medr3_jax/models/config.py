"""ModelConfig: the dimensions of a LLaMA / Qwen2 decoder, read from an HF `config.json`.

One frozen dataclass describes both families; two switches (`qkv_bias`,
`tie_word_embeddings`) are all that differ. Presets are tested Python values: a gin model
file only picks one by name.

    cfg = ModelConfig.from_hf_dir("/ckpt/Llama-3.1-8B-Instruct")
    cfg = preset("qwen2_5_7b")
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Literal, Mapping

import numpy as np

Family = Literal["llama", "qwen2"]
RematPolicy = Literal["none", "full", "dots"]
CacheAttention = Literal["blockwise", "dense"]
DecodeWeights = Literal["stacked", "per_layer"]

_ARCHITECTURES: dict[str, Family] = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
}
_MODEL_TYPES: dict[str, Family] = {"llama": "llama", "qwen2": "qwen2"}


class ConfigError(ValueError):
    """A config.json we cannot serve; the message names the file and the field."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RopeScaling:
    """RoPE frequency scaling (HF `rope_parameters` / `rope_scaling`).

    rope_type: "linear" (positions / factor) or "llama3" (LLaMA-3.1 band-wise scaling).
    """

    rope_type: Literal["linear", "llama3"]
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def to_hf(self, rope_theta: float) -> dict[str, Any]:
        out: dict[str, Any] = {"rope_type": self.rope_type, "factor": self.factor, "rope_theta": rope_theta}
        if self.rope_type == "llama3":
            out |= {
                "low_freq_factor": self.low_freq_factor,
                "high_freq_factor": self.high_freq_factor,
                "original_max_position_embeddings": self.original_max_position_embeddings,
            }
        return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Dimensions and switches of one decoder. Axis letters used project-wide in brackets."""

    family: Family
    vocab_size: int  # V
    hidden_size: int  # D
    intermediate_size: int  # F
    num_layers: int  # L
    num_heads: int  # N
    num_kv_heads: int  # K (GQA: N % K == 0)
    head_dim: int  # H
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    tie_word_embeddings: bool = False
    qkv_bias: bool = False  # Qwen2 has biases on q, k and v projections.
    max_position_embeddings: int = 8192
    bos_token_id: int | None = None
    eos_token_id: tuple[int, ...] = ()
    pad_token_id: int | None = None
    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    remat: RematPolicy = "none"
    # Implementation switches (same numbers, different speed): how cached calls attend —
    # "blockwise" reads only the live KV_BLOCKs of the cache (long caches), "dense" attends over
    # every slot, masked, in one pass (short caches; no inner loop) — and how many layers one
    # `lax.scan` iteration runs (num_layers unrolls fully: no per-layer loop, longer compiles).
    # decode_weights="per_layer": a decode call slices each layer's weights out of the stacks
    # once, before its loop, and each step runs the layers unrolled on those slices (faster CPU
    # steps, for a second copy of the weights during decode and longer compiles); "stacked"
    # scans the stacks in every step, where XLA:CPU copies each layer's weights out of them.
    cache_attention: CacheAttention = "blockwise"
    layer_unroll: int = 1
    decode_weights: DecodeWeights = "stacked"

    def __post_init__(self) -> None:
        positive = (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"ModelConfig.{name} must be positive, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim={self.head_dim} must be even for RoPE")
        for name in ("param_dtype", "compute_dtype"):
            try:
                np.dtype(_dtype_alias(getattr(self, name)))
            except TypeError as err:
                raise ConfigError(f"ModelConfig.{name}={getattr(self, name)!r} is not a dtype") from err
        if self.remat not in ("none", "full", "dots"):
            raise ConfigError(f"ModelConfig.remat={self.remat!r}; expected 'none', 'full' or 'dots'")
        if self.cache_attention not in ("blockwise", "dense"):
            raise ConfigError(f"ModelConfig.cache_attention={self.cache_attention!r}; expected 'blockwise' or 'dense'")
        if self.decode_weights not in ("stacked", "per_layer"):
            raise ConfigError(f"ModelConfig.decode_weights={self.decode_weights!r}; expected 'stacked' or 'per_layer'")
        if not 1 <= self.layer_unroll <= self.num_layers:
            raise ConfigError(
                f"ModelConfig.layer_unroll={self.layer_unroll} must be in [1, num_layers={self.num_layers}]"
            )

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    @property
    def num_params(self) -> int:
        """Parameter count from shapes alone (embedding counted once when tied)."""
        d, f, n, k, h = self.hidden_size, self.intermediate_size, self.num_heads, self.num_kv_heads, self.head_dim
        attn = d * n * h + 2 * d * k * h + n * h * d + (n * h + 2 * k * h if self.qkv_bias else 0)
        layer = attn + 3 * d * f + 2 * d
        head = 0 if self.tie_word_embeddings else d * self.vocab_size
        return self.vocab_size * d + self.num_layers * layer + d + head

    # ---- HF config.json ------------------------------------------------------------------
    @classmethod
    def from_hf_dir(cls, path: str | os.PathLike[str], **overrides: Any) -> ModelConfig:
        """Reads `<path>/config.json` (or `path` itself when it is the json file)."""
        file = os.fspath(path)
        if os.path.isdir(file):
            file = os.path.join(file, "config.json")
        if not os.path.exists(file):
            raise ConfigError(f"{file}: no such file (expected an HF config.json)")
        with open(file, encoding="utf-8") as fh:
            try:
                hf = json.load(fh)
            except json.JSONDecodeError as err:
                raise ConfigError(f"{file}: not valid JSON ({err})") from err
        return cls.from_hf_config(hf, source=file, **overrides)

    @classmethod
    def from_hf_config(cls, hf: Mapping[str, Any], *, source: str = "config.json", **overrides: Any) -> ModelConfig:
        """Builds a config from the dict of an HF `LlamaForCausalLM` / `Qwen2ForCausalLM` config."""
        family = _family(hf, source)

        def need(key: str) -> Any:
            if key not in hf:
                raise ConfigError(f"{source}: missing field {key!r}")
            return hf[key]

        hidden, heads = int(need("hidden_size")), int(need("num_attention_heads"))
        rope_theta, scaling = _rope(hf, source)
        eos = hf.get("eos_token_id")
        eos_ids = tuple(int(e) for e in eos) if isinstance(eos, (list, tuple)) else (() if eos is None else (int(eos),))
        cfg = dict(
            family=family,
            vocab_size=int(need("vocab_size")),
            hidden_size=hidden,
            intermediate_size=int(need("intermediate_size")),
            num_layers=int(need("num_hidden_layers")),
            num_heads=heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or heads),
            head_dim=int(hf.get("head_dim") or hidden // heads),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=scaling,
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            qkv_bias=family == "qwen2" or bool(hf.get("attention_bias", False)),
            max_position_embeddings=int(hf.get("max_position_embeddings", 8192)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=eos_ids,
            pad_token_id=hf.get("pad_token_id"),
        )
        if family == "llama" and hf.get("mlp_bias"):
            raise ConfigError(f"{source}: mlp_bias=true is not supported")
        if hf.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"{source}: hidden_act={hf.get('hidden_act')!r}; only 'silu' is supported")
        cfg.update(overrides)
        return cls(**cfg)

    def to_hf_config(self) -> dict[str, Any]:
        """The `config.json` transformers needs to load our exported weights."""
        arch = "LlamaForCausalLM" if self.family == "llama" else "Qwen2ForCausalLM"
        rope = (
            self.rope_scaling.to_hf(self.rope_theta)
            if self.rope_scaling
            else {"rope_type": "default", "rope_theta": self.rope_theta}
        )
        out: dict[str, Any] = {
            "architectures": [arch],
            "model_type": self.family,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": rope,
            "rope_scaling": self.rope_scaling.to_hf(self.rope_theta) if self.rope_scaling else None,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "torch_dtype": self.param_dtype,
            "dtype": self.param_dtype,
        }
        if self.family == "llama":
            out["attention_bias"] = self.qkv_bias
            out["mlp_bias"] = False
        if self.bos_token_id is not None:
            out["bos_token_id"] = self.bos_token_id
        if self.eos_token_id:
            out["eos_token_id"] = list(self.eos_token_id) if len(self.eos_token_id) > 1 else self.eos_token_id[0]
        if self.pad_token_id is not None:
            out["pad_token_id"] = self.pad_token_id
        return out


def _dtype_alias(name: str) -> Any:
    import ml_dtypes  # noqa: PLC0415 - numpy does not know bfloat16 by name

    return ml_dtypes.bfloat16 if name == "bfloat16" else name


def _family(hf: Mapping[str, Any], source: str) -> Family:
    archs = hf.get("architectures") or []
    for arch in archs:
        if arch in _ARCHITECTURES:
            return _ARCHITECTURES[arch]
    if archs:
        raise ConfigError(f"{source}: unsupported architecture {archs!r}; supported: {sorted(_ARCHITECTURES)}")
    model_type = hf.get("model_type")
    if model_type in _MODEL_TYPES:
        return _MODEL_TYPES[model_type]
    raise ConfigError(f"{source}: unsupported model_type {model_type!r}; supported: {sorted(_MODEL_TYPES)}")


def _rope(hf: Mapping[str, Any], source: str) -> tuple[float, RopeScaling | None]:
    """Reads RoPE theta and scaling from either spelling (transformers 5 `rope_parameters`,
    older `rope_theta` + `rope_scaling`)."""
    params = dict(hf.get("rope_parameters") or {})
    legacy = dict(hf.get("rope_scaling") or {})
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    merged = legacy | params
    rope_type = merged.get("rope_type", merged.get("type", "default"))
    if rope_type == "default":
        return theta, None
    if rope_type not in ("linear", "llama3"):
        raise ConfigError(f"{source}: rope type {rope_type!r} is not supported (default, linear, llama3)")
    kwargs: dict[str, Any] = {"rope_type": rope_type, "factor": float(merged["factor"])}
    if rope_type == "llama3":
        kwargs |= {
            "low_freq_factor": float(merged["low_freq_factor"]),
            "high_freq_factor": float(merged["high_freq_factor"]),
            "original_max_position_embeddings": int(merged["original_max_position_embeddings"]),
        }
    return theta, RopeScaling(**kwargs)


def rope_inv_freq(config: ModelConfig) -> np.ndarray:
    """Inverse frequencies [H/2] in float64, after scaling; matches transformers' rope init."""
    h = config.head_dim
    inv = 1.0 / (config.rope_theta ** (np.arange(0, h, 2, dtype=np.float64) / h))
    s = config.rope_scaling
    if s is None:
        return inv
    if s.rope_type == "linear":
        return inv / s.factor
    # llama3: keep high frequencies, divide low ones by `factor`, interpolate the band between.
    low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > low_wavelen, inv / s.factor, inv)
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, scaled)


# ---- presets ------------------------------------------------------------------------------
_LLAMA3_SCALING = RopeScaling(
    rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
)

PRESETS: dict[str, ModelConfig] = {
    "llama3_1_8b_instruct": ModelConfig(
        family="llama",
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_layers=32,
        num_heads=32,
        num_kv_heads=8,
        head_dim=128,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        rope_scaling=_LLAMA3_SCALING,
        max_position_embeddings=131072,
        bos_token_id=128000,
        eos_token_id=(128001, 128008, 128009),
    ),
    "qwen2_5_7b": ModelConfig(
        family="qwen2",
        vocab_size=152064,
        hidden_size=3584,
        intermediate_size=18944,
        num_layers=28,
        num_heads=28,
        num_kv_heads=4,
        head_dim=128,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        qkv_bias=True,
        max_position_embeddings=131072,
        bos_token_id=151643,
        eos_token_id=(151643,),
    ),
    "qwen2_5_14b": ModelConfig(
        family="qwen2",
        vocab_size=152064,
        hidden_size=5120,
        intermediate_size=13824,
        num_layers=48,
        num_heads=40,
        num_kv_heads=8,
        head_dim=128,
        rms_norm_eps=1e-5,
        rope_theta=1000000.0,
        qkv_bias=True,
        max_position_embeddings=131072,
        bos_token_id=151643,
        eos_token_id=(151643,),
    ),
    "llama3_2_1b": ModelConfig(
        family="llama",
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_layers=16,
        num_heads=32,
        num_kv_heads=8,
        head_dim=64,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        rope_scaling=RopeScaling(rope_type="llama3", factor=32.0, original_max_position_embeddings=8192),
        tie_word_embeddings=True,
        max_position_embeddings=131072,
        bos_token_id=128000,
        eos_token_id=(128001,),
    ),
    "qwen2_5_1_5b": ModelConfig(
        family="qwen2",
        vocab_size=151936,
        hidden_size=1536,
        intermediate_size=8960,
        num_layers=28,
        num_heads=12,
        num_kv_heads=2,
        head_dim=128,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        qkv_bias=True,
        tie_word_embeddings=True,
        max_position_embeddings=32768,
        bos_token_id=151643,
        eos_token_id=(151643,),
    ),
    "smollm2_135m_instruct": ModelConfig(
        family="llama",
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_layers=30,
        num_heads=9,
        num_kv_heads=3,
        head_dim=64,
        rms_norm_eps=1e-5,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        max_position_embeddings=8192,
        bos_token_id=1,
        eos_token_id=(2,),
        pad_token_id=2,
    ),
    # A few-MB model for unit tests: GQA, llama3 rope scaling, every code path exercised.
    "tiny": ModelConfig(
        family="llama",
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        rope_scaling=RopeScaling(rope_type="llama3", factor=8.0, original_max_position_embeddings=64),
        max_position_embeddings=512,
    ),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A named preset, optionally with fields replaced (e.g. `param_dtype="bfloat16"`)."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)
