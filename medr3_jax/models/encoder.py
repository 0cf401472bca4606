"""NNX BERT encoder for retrieval: all-MiniLM-L6-v2 (bundled), MedCPT, BGE and e5 by config.

    encoder = load_encoder(assets.minilm_dir())             # pooling read from the model dir
    tokens, mask = encoder_inputs(tokenizer, ["chest pain"], max_len=64)
    vectors = encoder.embed(tokens, mask)                    # [B,D] f32, L2-normalised for MiniLM

Post-LayerNorm BERT: embeddings (word + position + token type) -> LN -> L blocks of
(self-attention -> add & LN -> GELU FFN -> add & LN). Layers are stacked on L and run by
`lax.scan`, as in the decoder. Pooling: mean over real tokens, or the [CLS] vector.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Literal, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Array = jax.Array
Pooling = Literal["mean", "cls"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class EncoderConfig:
    """BERT dimensions and how a sentence vector is made from the hidden states."""

    vocab_size: int  # V
    hidden_size: int  # D
    num_layers: int  # L
    num_heads: int  # N
    intermediate_size: int  # F
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pooling: Pooling = "mean"
    normalize: bool = True  # L2-normalise the pooled vector (cosine = dot product)
    query_prefix: str = ""  # e5: "query: "
    passage_prefix: str = ""  # e5: "passage: "
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not a multiple of num_heads={self.num_heads}")
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"EncoderConfig.pooling={self.pooling!r}; expected 'mean' or 'cls'")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_hf_dir(cls, path: str, **overrides: Any) -> EncoderConfig:
        """From `config.json` of a BertModel, with sentence-transformers pooling/normalise files
        (`1_Pooling/config.json`, `modules.json`) when the directory has them."""
        file = os.path.join(path, "config.json")
        if not os.path.exists(file):
            raise FileNotFoundError(f"{file}: no such file (expected a BERT config.json)")
        with open(file, encoding="utf-8") as fh:
            hf = json.load(fh)
        if hf.get("model_type") != "bert" and "BertModel" not in (hf.get("architectures") or []):
            raise ValueError(f"{file}: model_type={hf.get('model_type')!r} is not a BERT encoder")
        if hf.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{file}: hidden_act={hf.get('hidden_act')!r}; only 'gelu' is supported")
        values: dict[str, Any] = dict(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"],
            intermediate_size=hf["intermediate_size"],
            max_position_embeddings=hf.get("max_position_embeddings", 512),
            type_vocab_size=hf.get("type_vocab_size", 2),
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        )
        values |= _sentence_transformers_pooling(path)
        return cls(**(values | overrides))


def _sentence_transformers_pooling(path: str) -> dict[str, Any]:
    pooling_file = os.path.join(path, "1_Pooling", "config.json")
    modules_file = os.path.join(path, "modules.json")
    out: dict[str, Any] = {}
    if os.path.exists(pooling_file):
        with open(pooling_file, encoding="utf-8") as fh:
            pooling = json.load(fh)
        out["pooling"] = "cls" if pooling.get("pooling_mode_cls_token") else "mean"
    if os.path.exists(modules_file):
        with open(modules_file, encoding="utf-8") as fh:
            out["normalize"] = any(m.get("type", "").endswith("Normalize") for m in json.load(fh))
    return out


# Presets: how each retriever family pools; dimensions come from the checkpoint's config.json.
ENCODER_STYLES: dict[str, dict[str, Any]] = {
    "minilm": dict(pooling="mean", normalize=True),
    "bge": dict(pooling="cls", normalize=True),
    "e5": dict(pooling="mean", normalize=True, query_prefix="query: ", passage_prefix="passage: "),
    "medcpt": dict(pooling="cls", normalize=False),  # separate query and article checkpoints
}


def _param_shapes(c: EncoderConfig) -> dict[str, tuple[int, ...]]:
    l, d, n, h, f = c.num_layers, c.hidden_size, c.num_heads, c.head_dim, c.intermediate_size
    return {
        "word_embedding": (c.vocab_size, d),
        "position_embedding": (c.max_position_embeddings, d),
        "type_embedding": (c.type_vocab_size, d),
        "embed_ln_scale": (d,),
        "embed_ln_bias": (d,),
        "layers/q_proj": (l, d, n, h),
        "layers/q_bias": (l, n, h),
        "layers/k_proj": (l, d, n, h),
        "layers/k_bias": (l, n, h),
        "layers/v_proj": (l, d, n, h),
        "layers/v_bias": (l, n, h),
        "layers/o_proj": (l, n, h, d),
        "layers/o_bias": (l, d),
        "layers/attn_ln_scale": (l, d),
        "layers/attn_ln_bias": (l, d),
        "layers/ffn_in": (l, d, f),
        "layers/ffn_in_bias": (l, f),
        "layers/ffn_out": (l, f, d),
        "layers/ffn_out_bias": (l, d),
        "layers/ffn_ln_scale": (l, d),
        "layers/ffn_ln_bias": (l, d),
    }


def layer_norm(x: Array, scale: Array, bias: Array, eps: float) -> Array:
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + eps) * scale + bias).astype(x.dtype)


def _block(c: EncoderConfig, p: Mapping[str, Array], x: Array, mask: Array) -> Array:
    """One post-LN BERT block. x [B,T,D], mask [B,T] (real tokens)."""
    q = jnp.einsum("BTD,DNH->BTNH", x, p["q_proj"]) + p["q_bias"]
    k = jnp.einsum("BTD,DNH->BTNH", x, p["k_proj"]) + p["k_bias"]
    v = jnp.einsum("BTD,DNH->BTNH", x, p["v_proj"]) + p["v_bias"]
    scores = jnp.einsum("BTNH,BSNH->BNTS", q, k, preferred_element_type=jnp.float32) * (c.head_dim**-0.5)
    scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
    attn = jnp.einsum("BNTS,BSNH->BTNH", jax.nn.softmax(scores, -1).astype(x.dtype), v)
    x = layer_norm(
        x + jnp.einsum("BTNH,NHD->BTD", attn, p["o_proj"]) + p["o_bias"],
        p["attn_ln_scale"],
        p["attn_ln_bias"],
        c.layer_norm_eps,
    )
    hidden = jax.nn.gelu(jnp.einsum("BTD,DF->BTF", x, p["ffn_in"]) + p["ffn_in_bias"], approximate=False)
    out = jnp.einsum("BTF,FD->BTD", hidden, p["ffn_out"]) + p["ffn_out_bias"]
    return layer_norm(x + out, p["ffn_ln_scale"], p["ffn_ln_bias"], c.layer_norm_eps)


class BertEncoder(nnx.Module):
    """`(tokens, mask) -> hidden [B,T,D]`; `embed(tokens, mask) -> [B,D]` pooled sentence vectors."""

    def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
        self.config = config
        init = nnx.initializers.normal(0.02)
        dtype = jnp.dtype(config.dtype)
        params: dict[str, Any] = {}
        for path, shape in _param_shapes(config).items():
            name = path.split("/")[-1]
            if name.endswith("ln_scale"):
                value = jnp.ones(shape, dtype)
            elif "bias" in name:
                value = jnp.zeros(shape, dtype)
            else:
                value = init(rngs.params(), shape, dtype)
            params[name if "/" not in path else path] = nnx.Param(value)
        for name in [p for p in params if "/" not in p]:
            setattr(self, name, params[name])
        self.layers = nnx.Dict({p.split("/")[1]: v for p, v in params.items() if "/" in p})

    def __call__(self, tokens: Array, mask: Array, token_types: Array | None = None) -> Array:
        c = self.config
        t = tokens.shape[1]
        types = jnp.zeros_like(tokens) if token_types is None else token_types
        x = self.word_embedding[...][tokens] + self.position_embedding[...][:t][None] + self.type_embedding[...][types]
        x = layer_norm(x, self.embed_ln_scale[...], self.embed_ln_bias[...], c.layer_norm_eps)
        params = {k: v[...] for k, v in self.layers.items()}
        x, _ = jax.lax.scan(lambda x, p: (_block(c, p, x, mask.astype(bool)), None), x, params)
        return x

    def embed(self, tokens: Array, mask: Array) -> Array:
        """Pooled (and, per config, L2-normalised) f32 sentence vectors [B,D]."""
        hidden = self(tokens, mask).astype(jnp.float32)
        if self.config.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weight = mask.astype(jnp.float32)[..., None]
            pooled = (hidden * weight).sum(1) / jnp.maximum(weight.sum(1), 1e-9)
        if self.config.normalize:
            pooled = pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        return pooled


# ---- HF BERT safetensors -> params ----------------------------------------------------------
def _hf_table(c: EncoderConfig) -> dict[str, tuple[str, Any]]:
    """Our path -> (HF key with {i} for the layer, HF tensor -> ours)."""
    n, h, d = c.num_heads, c.head_dim, c.hidden_size
    heads_in = lambda w: w.T.reshape(d, n, h)  # noqa: E731 - [N*H, D] -> [D, N, H]
    heads_bias = lambda b: b.reshape(n, h)  # noqa: E731
    same = lambda w: w  # noqa: E731
    layer = "encoder.layer.{i}."
    return {
        "word_embedding": ("embeddings.word_embeddings.weight", same),
        "position_embedding": ("embeddings.position_embeddings.weight", same),
        "type_embedding": ("embeddings.token_type_embeddings.weight", same),
        "embed_ln_scale": ("embeddings.LayerNorm.weight", same),
        "embed_ln_bias": ("embeddings.LayerNorm.bias", same),
        "layers/q_proj": (layer + "attention.self.query.weight", heads_in),
        "layers/q_bias": (layer + "attention.self.query.bias", heads_bias),
        "layers/k_proj": (layer + "attention.self.key.weight", heads_in),
        "layers/k_bias": (layer + "attention.self.key.bias", heads_bias),
        "layers/v_proj": (layer + "attention.self.value.weight", heads_in),
        "layers/v_bias": (layer + "attention.self.value.bias", heads_bias),
        "layers/o_proj": (layer + "attention.output.dense.weight", lambda w: w.T.reshape(n, h, d)),
        "layers/o_bias": (layer + "attention.output.dense.bias", same),
        "layers/attn_ln_scale": (layer + "attention.output.LayerNorm.weight", same),
        "layers/attn_ln_bias": (layer + "attention.output.LayerNorm.bias", same),
        "layers/ffn_in": (layer + "intermediate.dense.weight", lambda w: w.T),
        "layers/ffn_in_bias": (layer + "intermediate.dense.bias", same),
        "layers/ffn_out": (layer + "output.dense.weight", lambda w: w.T),
        "layers/ffn_out_bias": (layer + "output.dense.bias", same),
        "layers/ffn_ln_scale": (layer + "output.LayerNorm.weight", same),
        "layers/ffn_ln_bias": (layer + "output.LayerNorm.bias", same),
    }


def load_encoder(path: str, **overrides: Any) -> BertEncoder:
    """A BertEncoder from an HF BERT directory (`bert.` key prefixes are accepted too)."""
    from medr3_jax.models.hf import CheckpointError, SafetensorsDir  # noqa: PLC0415

    config = EncoderConfig.from_hf_dir(path, **overrides)
    source = SafetensorsDir(path)
    keys = set(source.keys())
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in keys else ""
    shapes = _param_shapes(config)
    dtype = np.dtype(config.dtype)
    model = nnx.eval_shape(lambda: BertEncoder(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    values: dict[str, np.ndarray] = {}
    for ours, (hf_key, convert) in _hf_table(config).items():
        layered = "{i}" in hf_key
        names = [prefix + hf_key.format(i=i) for i in range(config.num_layers)] if layered else [prefix + hf_key]
        for name in names:
            if name not in keys:
                raise CheckpointError(f"{source.location}: missing tensor {name!r} (needed for {ours})")
        parts = [np.asarray(convert(source.read(name)), dtype) for name in names]
        value = np.stack(parts) if layered else parts[0]
        if value.shape != shapes[ours]:
            raise CheckpointError(
                f"{source.file_of(names[0])}: tensor {names[0]!r} gives {value.shape}, expected {shapes[ours]}"
            )
        values[ours] = value
    pure = nnx.to_pure_dict(state)
    for ours, value in values.items():
        node = pure
        *parents, leaf = ours.split("/")
        for p in parents:
            node = node[p]
        node[leaf] = jnp.asarray(value)
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state)


def load_encoder_tokenizer(path: str) -> Any:
    """The encoder directory's `tokenizer.json` without its shipped padding/truncation (MiniLM's
    truncates at 128): `encoder_inputs` pads and truncates itself, explicitly."""
    import tokenizers  # noqa: PLC0415

    file = os.path.join(path, "tokenizer.json")
    if not os.path.exists(file):
        raise FileNotFoundError(f"{file}: no such file (the encoder's tokenizer)")
    tokenizer = tokenizers.Tokenizer.from_file(file)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def encoder_inputs(
    tokenizer: Any, texts: Sequence[str], *, max_len: int, prefix: str = "", buckets: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """tokens, mask [B,W] from a `tokenizers.Tokenizer` with BERT's [CLS]/[SEP] post-processor;
    texts longer than max_len are truncated (keeping [SEP]). W = max_len, or with `buckets` the
    smallest bucket that holds the longest text (at most max_len): short queries then cost a
    short forward, with one compiled shape per bucket."""
    rows = []
    for text in texts:
        ids = tokenizer.encode(prefix + text, add_special_tokens=True).ids
        rows.append(ids[: max_len - 1] + ids[-1:] if len(ids) > max_len else ids)
    width = max_len
    if buckets:
        longest = max((len(r) for r in rows), default=1)
        width = min([b for b in sorted(buckets) if b >= longest] + [max_len])
    tokens = np.zeros((len(texts), width), np.int32)
    mask = np.zeros((len(texts), width), bool)
    for b, ids in enumerate(rows):
        tokens[b, : len(ids)], mask[b, : len(ids)] = ids, True
    return tokens, mask
