"""One Flax NNX decoder for LLaMA-3.x and Qwen2.5: RMSNorm, RoPE (incl. llama3 scaling), GQA,
optional qkv bias, tied or separate LM head, and a static-shape KV cache.

The same graph serves a full forward (training, prefill without cache), prefill into a cache
and cached decode:

    model = Decoder(preset("tiny"), rngs=nnx.Rngs(0))
    logits, _ = model(tokens, positions, mask)                    # [B,T,V], no cache
    cache = KVCache.create(model.config, batch=B, max_len=S)
    logits, cache = model(tokens, positions, mask, kv_cache=cache)  # writes T slots per row

Layers are stacked on a leading L axis and run by `lax.scan`, so compile time does not grow
with depth and remat wraps one layer body. Axis letters: B batch, T new tokens, S cache
slots, D model, N query heads, K kv heads, G = N/K, H head dim, F ffn, V vocab, L layers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from medr3_jax.models.config import ModelConfig, rope_inv_freq

Array = jax.Array

# Parameter shapes as functions of the config; the single source for init, loading and rules.
_LAYER_PARAMS: dict[str, str] = {
    "attn_norm": "LD",
    "q_proj": "LDNH",
    "k_proj": "LDKH",
    "v_proj": "LDKH",
    "o_proj": "LNHD",
    "mlp_norm": "LD",
    "gate_proj": "LDF",
    "up_proj": "LDF",
    "down_proj": "LFD",
}
_BIAS_PARAMS: dict[str, str] = {"q_bias": "LNH", "k_bias": "LKH", "v_bias": "LKH"}


def jnp_dtype(name: str) -> Any:
    return jnp.dtype(name)


def _dims(config: ModelConfig) -> dict[str, int]:
    c = config
    return {
        "L": c.num_layers,
        "D": c.hidden_size,
        "N": c.num_heads,
        "K": c.num_kv_heads,
        "H": c.head_dim,
        "F": c.intermediate_size,
        "V": c.vocab_size,
    }


def param_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter path of `Decoder` -> its shape, e.g. 'layers/q_proj' -> (L, D, N, H)."""
    dims = _dims(config)
    axes = {"embedding": "VD", "final_norm": "D"}
    axes |= {f"layers/{k}": v for k, v in _LAYER_PARAMS.items()}
    if config.qkv_bias:
        axes |= {f"layers/{k}": v for k, v in _BIAS_PARAMS.items()}
    if not config.tie_word_embeddings:
        axes["lm_head"] = "DV"
    return {path: tuple(dims[a] for a in letters) for path, letters in axes.items()}


KV_BLOCK = 128  # cache slots per block of blockwise attention; cache lengths are multiples


def kv_window(needed: int, max_len: int) -> int:
    """Cache slots a dense cached call attends over when `needed` slots may be live: the smallest
    KV_BLOCK * 2**k >= needed, at most `max_len` (powers of two keep the compiled variants per
    cache size few: 128, 256, 512, ... slots)."""
    window = KV_BLOCK
    while window < needed:
        window *= 2
    return min(window, max_len)


# ---- KV cache -----------------------------------------------------------------------------
def kv_cache_shapes(config: ModelConfig, batch: int, max_len: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Keys [L, B, K, H, S] and values [L, B, K, S, H]: kv heads before slots, and keys with
    slots minor, so a layer's slices are the operands of the two attention products as they
    are, scores = q [G*T, H] x keys [H, S] and out = probs [G*T, S] x values [S, H] per
    (row, kv head). (Slots-major storage cost a transpose of the attended slots in every layer
    of every decode step; slot-minor keys make the scores a plain product, which XLA:CPU ran
    ~1.5x faster than the transposed-operand form at decode sizes.)"""
    c = config
    return (
        (c.num_layers, batch, c.num_kv_heads, c.head_dim, max_len),
        (c.num_layers, batch, c.num_kv_heads, max_len, c.head_dim),
    )


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """Static-shape cache carried between calls.

    k:      [L, B, K, H, S] keys (after RoPE), slots minor (`kv_cache_shapes`).
    v:      [L, B, K, S, H] values.
    valid:  [B, S] bool, the slot holds a real token (padding and unused slots are False).
    length: [B] int32, the next slot each row writes; a call with T tokens advances it by T.
    """

    k: Array
    v: Array
    valid: Array
    length: Array

    @classmethod
    def create(cls, config: ModelConfig, *, batch: int, max_len: int, dtype: Any = None) -> KVCache:
        """An empty cache; `max_len` rounds up to a multiple of KV_BLOCK."""
        dtype = dtype or jnp_dtype(config.compute_dtype)
        max_len = -(-max_len // KV_BLOCK) * KV_BLOCK
        k_shape, v_shape = kv_cache_shapes(config, batch, max_len)
        return cls(
            k=jnp.zeros(k_shape, dtype),
            v=jnp.zeros(v_shape, dtype),
            valid=jnp.zeros((batch, max_len), bool),
            length=jnp.zeros((batch,), jnp.int32),
        )

    @property
    def max_len(self) -> int:
        return self.v.shape[3]


def write_slots(length: Array, t: int) -> tuple[Array, Array]:
    """Row and slot indices [B,T] where T new tokens go: slots length[b] .. length[b]+T-1."""
    b = length.shape[0]
    rows = jnp.broadcast_to(jnp.arange(b)[:, None], (b, t))
    return rows, length[:, None] + jnp.arange(t)[None, :]


# ---- layers as pure functions ---------------------------------------------------------------
def rms_norm(x: Array, scale: Array, eps: float) -> Array:
    """HF LLaMA RMSNorm: normalise in f32, cast back, then scale."""
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return scale.astype(x.dtype) * normed.astype(x.dtype)


def rope_tables(config: ModelConfig, positions: Array) -> tuple[Array, Array]:
    """sin, cos [B,T,H/2] for integer positions [B,T] (f32 angles, as transformers)."""
    inv_freq = jnp.asarray(rope_inv_freq(config).astype(np.float32))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    return jnp.sin(angles), jnp.cos(angles)


def rope_table(config: ModelConfig, length: int) -> tuple[Array, Array]:
    """sin, cos [length, H/2] of positions 0 .. length-1, for `Decoder(..., rope_table=...)`.

    A decode loop builds it once, outside the loop, and its steps gather rows. Computed in the
    step, sin/cos get fused by XLA into every layer's RoPE and evaluated again per head and
    per layer (~4 ms of a 110 ms decode step of SmolLM2 at batch 32 on the CI CPU)."""
    sin, cos = rope_tables(config, jnp.arange(length, dtype=jnp.int32)[None])
    return sin[0], cos[0]


def apply_rope(x: Array, sin: Array, cos: Array) -> Array:
    """Rotate-half RoPE (HF layout: first and second halves of H pair up). x [B,T,*,H]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    sin, cos = sin[:, :, None, :], cos[:, :, None, :]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def _group_queries(q: Array, kv_heads: int) -> Array:
    """q [B,T,N,H] -> [B,K,G*T,H]: the G query heads sharing a kv head become extra rows, so
    scores are one batched matmul per (batch, kv head) with leading batch dims (fast on CPU)."""
    b, t, n, h = q.shape
    q = q.reshape(b, t, kv_heads, n // kv_heads, h)
    return jnp.einsum("BTKGH->BKGTH", q).reshape(b, kv_heads, (n // kv_heads) * t, h)


def _ungroup(out: Array, t: int) -> Array:
    """[B,K,G*T,H] -> [B,T,N,H]."""
    b, kv, gt, h = out.shape
    out = out.reshape(b, kv, gt // t, t, h)
    return jnp.einsum("BKGTH->BTKGH", out).reshape(b, t, kv * (gt // t), h)


def _group_mask(mask: Array, groups: int) -> Array:
    """[B,T,S] -> [B,1,G*T,S], matching `_group_queries` rows."""
    b, t, s = mask.shape
    return jnp.broadcast_to(mask[:, None, None], (b, 1, groups, t, s)).reshape(b, 1, groups * t, s)


def attention(q: Array, k: Array, v: Array, mask: Array) -> Array:
    """Grouped-query attention. q [B,T,N,H], k/v [B,S,K,H], mask [B,T,S] bool -> [B,T,N,H].

    Softmax in f32; fully masked query rows (padding) give finite garbage, never NaN.
    """
    return cache_layout_attention(q, jnp.einsum("BSKH->BKHS", k), jnp.einsum("BSKH->BKSH", v), mask)


def cache_layout_attention(q: Array, k: Array, v: Array, mask: Array) -> Array:
    """`attention` on operands in the cache's layout: k [B,K,H,S], v [B,K,S,H] (no transposes)."""
    b, t, n, h = q.shape
    kv = k.shape[1]
    qg = _group_queries(q, kv)
    scores = jnp.einsum("BKQH,BKHS->BKQS", qg, k, preferred_element_type=jnp.float32) * (h**-0.5)
    scores = jnp.where(_group_mask(mask, n // kv), scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return _ungroup(jnp.einsum("BKQS,BKSH->BKQH", probs, v), t)


def blockwise_attention(
    q: Array, k: Array, v: Array, mask: Array, live: Array, layer: Array | int | None = None
) -> Array:
    """Attention over the first `live` cache slots only, KV_BLOCK at a time (online softmax).

    q [B,T,N,H], k [B,K,H,S] and v [B,K,S,H] (the cache's layout) with S a multiple of KV_BLOCK,
    mask [B,T,S], live: int32 scalar. With `layer`, k/v are the whole cache ([L,...]) and each
    block is read straight from that layer's slice (no copy of the layer's whole cache per
    step). The loop runs ceil(live / KV_BLOCK) times, so a decode step reads the live part of
    the cache, not all S slots. Equal to `attention` up to f32 rounding (masked entries score finfo.min, so a row
    whose first blocks are all padding is reset by its first real block).
    """
    b, t, n, h = q.shape
    kv, s = v.shape[-3], v.shape[-2]
    if s % KV_BLOCK:
        raise ValueError(f"cache length {s} is not a multiple of KV_BLOCK={KV_BLOCK}")
    qg = _group_queries(q, kv) * jnp.asarray(h**-0.5, q.dtype)
    gmask = _group_mask(mask, n // kv)
    low = jnp.finfo(jnp.float32).min

    def read(cache: Array, j: Array, axis: int) -> Array:  # block j along the slot axis (of B,K,·,·)
        if layer is None:
            part = jax.lax.dynamic_slice_in_dim(cache, j * KV_BLOCK, KV_BLOCK, axis=axis)
        else:
            start = [jnp.zeros((), jnp.int32)] * 5
            start[0], start[1 + axis] = jnp.asarray(layer, jnp.int32), (j * KV_BLOCK).astype(jnp.int32)
            size = list(cache.shape[1:])
            size[axis] = KV_BLOCK
            part = jax.lax.dynamic_slice(cache, start, (1, *size))[0]
        return part.astype(q.dtype)

    def block(j, carry):
        m, denom, acc = carry
        kb, vb = read(k, j, 3), read(v, j, 2)  # [B,K,H,KV_BLOCK], [B,K,KV_BLOCK,H]
        mb = jax.lax.dynamic_slice_in_dim(gmask, j * KV_BLOCK, KV_BLOCK, axis=3)
        scores = jnp.einsum("BKQH,BKHS->BKQS", qg, kb, preferred_element_type=jnp.float32)
        scores = jnp.where(mb, scores, low)
        m_new = jnp.maximum(m, scores.max(axis=-1))
        correction = jnp.exp(m - m_new)
        probs = jnp.exp(scores - m_new[..., None])
        denom = denom * correction + probs.sum(axis=-1)
        pv = jnp.einsum("BKQS,BKSH->BKQH", probs.astype(q.dtype), vb, preferred_element_type=jnp.float32)
        return m_new, denom, acc * correction[..., None] + pv

    rows = (b, kv, (n // kv) * t)
    init = (jnp.full(rows, low, jnp.float32), jnp.zeros(rows, jnp.float32), jnp.zeros(rows + (h,), jnp.float32))
    blocks = jnp.minimum((live + KV_BLOCK - 1) // KV_BLOCK, s // KV_BLOCK)
    _, denom, acc = jax.lax.fori_loop(0, blocks, block, init)
    return _ungroup((acc / denom[..., None]).astype(q.dtype), t)


def _decoder_layer(
    config: ModelConfig,
    p: dict[str, Array],
    x: Array,
    sin: Array,
    cos: Array,
    mask: Array,
    kv: tuple[Array, Array, Array] | None,
    slots: tuple[Array, Array] | None,
) -> tuple[Array, tuple[Array, Array] | None]:
    """One pre-norm block. x [B,T,D].

    kv = (whole cache k [L,B,K,H,S] and v [L,B,K,S,H], this layer's index, live slot count,
    window) or None;
    `slots` = (rows, slots) [B,T] where the new keys go. The new keys are scattered into the
    carried cache in place (no per-step copy of the cache); attention then reads only the
    live blocks of this layer's slice (`cache_attention="blockwise"`, a loop over blocks), or,
    for a one-token decode step under `"dense"`, the first `window` slots, masked, in one pass
    (no loop, which is what a GPU wants; the caller makes the window cover every live slot).
    Calls of several tokens (prefill, append) stay block-wise under both: dense scores of T
    tokens over the window ([B,N,T,window] f32) would not fit for long prompts.
    """
    dt = x.dtype
    h = rms_norm(x, p["attn_norm"], config.rms_norm_eps)
    q = jnp.einsum("BTD,DNH->BTNH", h, p["q_proj"].astype(dt))
    k = jnp.einsum("BTD,DKH->BTKH", h, p["k_proj"].astype(dt))
    v = jnp.einsum("BTD,DKH->BTKH", h, p["v_proj"].astype(dt))
    if config.qkv_bias:
        q, k, v = q + p["q_bias"].astype(dt), k + p["k_bias"].astype(dt), v + p["v_bias"].astype(dt)
    q, k = apply_rope(q, sin, cos), apply_rope(k, sin, cos)
    new_kv = None
    if kv is not None:
        cache_k, cache_v, layer, live, window = kv
        rows, where = slots
        # The index arrays rows/where [B,T] sit apart from the K (and H) slices, so the indexed
        # part is [B,T,K,H] in both layouts: the new keys and values as they are.
        cache_k = cache_k.at[layer, rows, :, :, where].set(k.astype(cache_k.dtype), mode="drop")
        cache_v = cache_v.at[layer, rows, :, where].set(v.astype(cache_v.dtype), mode="drop")
        new_kv = (cache_k, cache_v)
        if config.cache_attention == "dense" and q.shape[1] == 1:
            w = window or cache_v.shape[3]
            attn = cache_layout_attention(q, cache_k[layer, ..., :w], cache_v[layer, :, :, :w], mask[:, :, :w])
        else:
            attn = blockwise_attention(q, cache_k, cache_v, mask, live, layer=layer)
    else:
        attn = attention(q, k.astype(dt), v.astype(dt), mask)
    # Heads flattened on both sides ([B,T,N*H] x [N*H,D], both free reshapes): contracting N
    # and H as two dims let XLA:CPU transpose the o_proj weight in every layer of every step.
    b, t, n, hd = attn.shape
    o_proj = p["o_proj"].astype(dt).reshape(n * hd, -1)
    x = x + jnp.einsum("BTE,ED->BTD", attn.reshape(b, t, n * hd), o_proj)
    h = rms_norm(x, p["mlp_norm"], config.rms_norm_eps)
    gate = jnp.einsum("BTD,DF->BTF", h, p["gate_proj"].astype(dt))
    up = jnp.einsum("BTD,DF->BTF", h, p["up_proj"].astype(dt))
    x = x + jnp.einsum("BTF,FD->BTD", jax.nn.silu(gate) * up, p["down_proj"].astype(dt))
    return x, new_kv


_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


# ---- modules --------------------------------------------------------------------------------
class DecoderLayers(nnx.Module):
    """All L blocks, parameters stacked on a leading L axis, run with `lax.scan`."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        shapes = {k.split("/", 1)[1]: v for k, v in param_shapes(config).items() if k.startswith("layers/")}
        dtype = jnp_dtype(config.param_dtype)
        init = nnx.initializers.normal(0.02)
        for name, shape in shapes.items():
            if name.endswith("_norm"):
                value = jnp.ones(shape, dtype)
            elif name.endswith("_bias"):
                value = jnp.zeros(shape, dtype)
            else:
                value = init(rngs.params(), shape, dtype)
            setattr(self, name, nnx.Param(value))
        self._names = tuple(shapes)
        self.config = config

    def per_layer(self) -> list[dict[str, Array]]:
        """Each layer's weights as arrays of their own (slices of the stacks), for
        `__call__(layer_weights=...)`: sliced once, outside a decode loop, they are not copied
        out of the stacks again in every step (`ModelConfig.decode_weights="per_layer"`)."""
        params = {name: getattr(self, name)[...] for name in self._names}
        return [{name: w[i] for name, w in params.items()} for i in range(self.config.num_layers)]

    def __call__(
        self,
        x: Array,
        sin: Array,
        cos: Array,
        mask: Array,
        cache: KVCache | None,
        kv_window: int | None = None,
        layer_weights: list[dict[str, Array]] | None = None,
    ) -> tuple[Array, tuple[Array, Array] | None]:
        """x [B,T,D] through all layers; with a cache, also the updated (k, v) in its layout.
        With `layer_weights` (from `per_layer`; cached calls only), the layers run unrolled
        on those arrays instead of a scan over the stacks."""
        params = {name: getattr(self, name)[...] for name in self._names}
        config = self.config
        layer_ids = jnp.arange(config.num_layers)
        if layer_weights is not None and cache is None:
            raise ValueError("layer_weights serve cached calls only")

        if cache is None:

            def body(x, xs):
                return _decoder_layer(config, xs[0], x, sin, cos, mask, None, None)[0], None

            if config.remat != "none":
                body = jax.checkpoint(body, policy=_REMAT_POLICIES[config.remat])
            x, _ = jax.lax.scan(body, x, (params, layer_ids), unroll=config.layer_unroll)
            return x, None

        slots = write_slots(cache.length, x.shape[1])
        live = jnp.max(cache.length) + x.shape[1]  # slots any query may see
        if layer_weights is not None:
            k, v = cache.k, cache.v
            for layer, p in enumerate(layer_weights):
                x, (k, v) = _decoder_layer(config, p, x, sin, cos, mask, (k, v, layer, live, kv_window), slots)
            return x, (k, v)

        def cached_body(carry, xs):
            x, k, v = carry
            p, layer = xs
            x, (k, v) = _decoder_layer(config, p, x, sin, cos, mask, (k, v, layer, live, kv_window), slots)
            return (x, k, v), None

        (x, k, v), _ = jax.lax.scan(cached_body, (x, cache.k, cache.v), (params, layer_ids), unroll=config.layer_unroll)
        return x, (k, v)


class Decoder(nnx.Module):
    """LLaMA / Qwen2 causal LM: `(tokens, positions, mask, kv_cache=None) -> (logits, kv_cache)`."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        shapes = param_shapes(config)
        dtype = jnp_dtype(config.param_dtype)
        init = nnx.initializers.normal(0.02)
        self.config = config
        self.embedding = nnx.Param(init(rngs.params(), shapes["embedding"], dtype))
        self.layers = DecoderLayers(config, rngs=rngs)
        self.final_norm = nnx.Param(jnp.ones(shapes["final_norm"], dtype))
        self.lm_head = None if config.tie_word_embeddings else nnx.Param(init(rngs.params(), shapes["lm_head"], dtype))

    def __call__(
        self,
        tokens: Array,
        positions: Array,
        mask: Array,
        kv_cache: KVCache | None = None,
        *,
        compute_logits: bool = True,
        kv_window: int | None = None,
        layer_weights: list[dict[str, Array]] | None = None,
        rope_table: tuple[Array, Array] | None = None,
    ) -> tuple[Array | None, KVCache | None]:
        """tokens, positions [B,T] int; mask [B,T] bool (real tokens).

        Without a cache, token t attends to earlier real tokens of the same row (causal by
        index). With a cache, the T tokens are written at slots `length .. length+T` of each
        row and attend to every valid slot up to their own; f32 logits [B,T,V] are returned
        with the updated cache. Writes past `max_len` are dropped: the caller sizes the cache.
        `compute_logits=False` skips the LM head (filling a cache needs no logits).
        `kv_window` (static; one-token calls under `cache_attention="dense"` only): attend over
        cache slots [0, kv_window) instead of all of them; every slot a query may see must lie
        inside (`kv_window(needed, max_len)` picks one). Blockwise attention bounds itself.
        `layer_weights` (cached calls): `self.layers.per_layer()`, sliced by the caller once for
        many calls (the sampler's decode loop), so the steps do not slice the stacks again.
        `rope_table`: `rope_table(config, n)`, built once for many calls; RoPE angles are then
        gathered by position (clipped to n-1: it must cover every position a real token has).
        """
        x, new_cache = self.hidden_states(
            tokens, positions, mask, kv_cache, kv_window=kv_window, layer_weights=layer_weights, rope_table=rope_table
        )
        return (self.logits(x) if compute_logits else None), new_cache

    def hidden_states(
        self,
        tokens: Array,
        positions: Array,
        mask: Array,
        kv_cache: KVCache | None = None,
        *,
        kv_window: int | None = None,
        layer_weights: list[dict[str, Array]] | None = None,
        rope_table: tuple[Array, Array] | None = None,
    ) -> tuple[Array, KVCache | None]:
        """`__call__` without the head: last-layer outputs [B,T,D] (before the final norm) and
        the cache. `logits` maps them to the vocabulary; the trainer does so a slice of
        positions at a time (`UpdateConfig.logits_chunk`) so that [B,T,V] f32 never exists."""
        c = self.config
        x = jnp.take(self.embedding[...], tokens, axis=0).astype(jnp_dtype(c.compute_dtype))
        if rope_table is None:
            sin, cos = rope_tables(c, positions)
        else:
            sin, cos = (jnp.take(table, positions, axis=0, mode="clip") for table in rope_table)
        attn_mask, new_cache = _attention_mask(mask, kv_cache)
        if kv_window is not None and kv_cache is not None and not 0 < kv_window <= kv_cache.max_len:
            raise ValueError(f"kv_window={kv_window} must be in (0, cache max_len={kv_cache.max_len}]")
        x, kv = self.layers(x, sin, cos, attn_mask, kv_cache, kv_window, layer_weights)
        if kv is not None:
            new_cache = dataclasses.replace(new_cache, k=kv[0], v=kv[1])
        return x, new_cache

    def logits(self, x: Array) -> Array:
        """f32 logits [..., V] of last-layer outputs x [..., D]: the final norm, then the LM head
        (the tied embedding when there is none)."""
        c = self.config
        dt = jnp_dtype(c.compute_dtype)
        x = rms_norm(x, self.final_norm[...], c.rms_norm_eps)
        if self.lm_head is None:
            return jnp.einsum("...D,VD->...V", x, self.embedding[...].astype(dt), preferred_element_type=jnp.float32)
        return jnp.einsum("...D,DV->...V", x, self.lm_head[...].astype(dt), preferred_element_type=jnp.float32)


def _attention_mask(mask: Array, cache: KVCache | None) -> tuple[Array, KVCache | None]:
    """[B,T,S] attention mask, and the cache with `valid`/`length` advanced past the T tokens."""
    mask = mask.astype(bool)
    t = mask.shape[1]
    if cache is None:
        causal = jnp.tril(jnp.ones((t, t), bool))
        return causal[None] & mask[:, None, :], None
    rows, where = write_slots(cache.length, t)
    valid = cache.valid.at[rows, where].set(mask, mode="drop")
    slots = jnp.arange(cache.max_len)
    query_slot = cache.length[:, None] + jnp.arange(t)[None, :]  # [B,T]
    attn = (slots[None, None, :] <= query_slot[:, :, None]) & valid[:, None, :]
    return attn, dataclasses.replace(cache, valid=valid, length=cache.length + t)


def abstract_decoder(config: ModelConfig) -> tuple[nnx.GraphDef, nnx.State]:
    """Graph and ShapeDtypeStruct state of a Decoder, without allocating parameters."""
    model = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
    return nnx.split(model)
