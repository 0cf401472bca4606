"""KV-cache sampler: batched prefill, an in-jit decode loop, and appending external tokens
(retrieved documents) into the live cache of chosen rows.

The state, cache included, is a value carried between turns (as in gemma's sampler): a
search turn is `decode -> append(documents) -> decode` on the same cache and never
re-prefills the conversation.

    sampler = Sampler(model, tokenizer, stop_strings=("</search>",))
    state = sampler.start(prompt_ids, max_new_tokens=512, seed=0)
    state, out = sampler.decode(state, SamplingParams(temperature=1.0))
    # rows with out.reason == STOP_STRING wrote </search>: retrieve, then
    state = sampler.append(state, rows=[3], tokens=[doc_ids])
    state, out = sampler.decode(state, params)     # only row 3 runs; the others stay done

Invariant: each row's newest token (`last_token`) is not yet in the cache; `decode` feeds it
and samples the next, `append` feeds it followed by the inserted tokens. So prefill, decode
and append all share one write path, and no logits are carried between calls.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import logging
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from medr3_jax.models.tokenizers import Tokenizer
from medr3_jax.models.transformer import KV_BLOCK, Decoder, KVCache, kv_cache_shapes, kv_window, rope_table
from medr3_jax.sampling.methods import SamplingParams, sample, token_logprobs
from medr3_jax.sampling.stops import StopTable
from medr3_jax.sharding.distributed import to_host
from medr3_jax.sharding.rules import batch_spec, fit_spec, kv_cache_spec

log = logging.getLogger(__name__)
Array = jax.Array

# Prompt widths: finer steps at short lengths, where padding is a large share of prefill.
PROMPT_BUCKETS = (32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192)
CACHE_ROUNDING = KV_BLOCK  # cache lengths round up to this, so nearby sizes share compiled code


class StopReason(enum.IntEnum):
    """Why a row stopped (RUNNING while it has not)."""

    RUNNING = 0
    EOS = 1
    STOP_STRING = 2
    LENGTH = 3  # the row's token budget is spent
    CACHE_FULL = 4  # no cache slot left: size the cache larger


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SamplerState:
    """Everything a batch of conversations needs to go on, on device.

    last_token [B]: newest token, not yet in the cache.  position [B]: its RoPE position.
    budget [B]: tokens the row may still sample.        stop_state [B]: stop automaton state.
    reason [B]: StopReason (RUNNING = will decode).     stop_match [B]: stop string id or -1.
    """

    cache: KVCache
    last_token: Array
    position: Array
    budget: Array
    stop_state: Array
    reason: Array
    stop_match: Array
    key: Array

    @property
    def batch(self) -> int:
        return self.last_token.shape[0]


@dataclasses.dataclass(frozen=True)
class DecodeOutput:
    """What one `decode` call sampled (host arrays).

    tokens [B,steps] int32 (pad after each row's count), logprobs [B,steps] f32,
    num_tokens [B], reason [B] (StopReason), stop_string [B] (the matched string or None).
    """

    tokens: np.ndarray
    logprobs: np.ndarray
    num_tokens: np.ndarray
    reason: np.ndarray
    stop_string: list[str | None]

    def row(self, b: int) -> list[int]:
        return self.tokens[b, : self.num_tokens[b]].tolist()


def bucket(n: int, buckets: Sequence[int]) -> int:
    """Smallest bucket >= n (beyond the last: multiples of the last)."""
    for size in buckets:
        if n <= size:
            return size
    return -(-n // buckets[-1]) * buckets[-1]


def chunk_widths(n: int, chunk: int) -> list[int]:
    """Widths of the prefill calls that append n tokens: full `chunk`s, then the smallest of
    chunk, chunk/2, chunk/4 that holds the rest. At most three compiled shapes, and a 640-token
    turn costs 256+256+128 slots of work instead of 3 x 256."""
    widths = [chunk] * (n // chunk)
    rest = n - chunk * len(widths)
    if rest:
        width = chunk
        while width % 2 == 0 and width // 2 >= max(rest, chunk // 4):
            width //= 2
        widths.append(width)
    return widths


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """tokens, mask, positions [B,width]: rows right-aligned, positions counting real tokens."""
    tokens = np.full((len(rows), width), pad_id, np.int32)
    mask = np.zeros((len(rows), width), bool)
    for b, row in enumerate(rows):
        tokens[b, width - len(row) :] = row
        mask[b, width - len(row) :] = True
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
    return tokens, mask, positions


class Sampler:
    """Prefill / decode / append over one model, with compiled code shared across calls.

    `trace_counts` counts how often each jitted function was traced (= compiled): tests use
    it to check that calls within a bucket reuse code.
    """

    def __init__(
        self,
        model: Decoder,
        tokenizer: Tokenizer,
        *,
        stop_strings: Sequence[str] = (),
        max_new_tokens: int = 512,
        append_chunk: int = 256,
        prompt_buckets: Sequence[int] = PROMPT_BUCKETS,
        mesh: Mesh | None = None,
        eos_ids: Sequence[int] | None = None,
    ):
        self.config = model.config
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.append_chunk = append_chunk
        self.prompt_buckets = tuple(prompt_buckets)
        self.mesh = mesh
        self.stop_table = StopTable.build(stop_strings, tokenizer.token_bytes()) if stop_strings else None
        self.trace_counts: collections.Counter[str] = collections.Counter()
        self._graphdef, self._params = nnx.split(model)
        # Ids that end a row (default: the tokenizer's eos + end-of-turn ids; () never stops).
        self._eos = jnp.asarray(tokenizer.stop_ids if eos_ids is None else tuple(eos_ids), jnp.int32)
        if self.stop_table is not None:
            self._next_state = jnp.asarray(self.stop_table.next_state)
            self._match = jnp.asarray(self.stop_table.match)
        self._fill = jax.jit(self._fill_impl, donate_argnames=("cache",))
        self._decode = jax.jit(
            self._decode_impl, static_argnames=("params", "steps", "window"), donate_argnames=("state",)
        )

    # ---- jitted bodies ------------------------------------------------------------------
    def _fill_impl(self, model_params, cache: KVCache, tokens: Array, positions: Array, mask: Array, count: Array):
        """Writes tokens [B,T] (mask: real ones) at each row's cache end; length += count."""
        self.trace_counts["fill"] += 1
        model = nnx.merge(self._graphdef, model_params)
        start = cache.length
        _, cache = model(tokens, positions, mask, kv_cache=cache, compute_logits=False)  # block-wise attention
        return dataclasses.replace(cache, length=start + count)

    def _decode_impl(self, model_params, state: SamplerState, params: SamplingParams, steps: int, window=None):
        """Up to `steps` tokens for every RUNNING row, inside one `lax.while_loop`."""
        self.trace_counts["decode"] += 1
        model = nnx.merge(self._graphdef, model_params)
        # Built here, outside the loop: RoPE angles of every slot's position, which the steps
        # gather (`rope_table`), and the per-layer weights, which are then not copied out of
        # the stacks in every step (ModelConfig.decode_weights).
        switches = {"rope_table": rope_table(self.config, state.cache.max_len)}
        if window is not None:
            switches["kv_window"] = window
        if self.config.decode_weights == "per_layer":
            switches["layer_weights"] = model.layers.per_layer()
        b = state.batch
        max_len = state.cache.max_len
        out_tokens = jnp.full((b, steps), self.tokenizer.pad_id, jnp.int32)
        out_logp = jnp.zeros((b, steps), jnp.float32)
        count = jnp.zeros((b,), jnp.int32)

        def cond(carry):
            step, st, *_ = carry
            return (step < steps) & jnp.any(st.reason == StopReason.RUNNING)

        def body(carry):
            step, st, out_tokens, out_logp, count = carry
            # A row with no budget left (resumed after an append) or no free slot stops before
            # it samples (cache writes past the end would be dropped).
            running = st.reason == StopReason.RUNNING
            reason = jnp.where(running & (st.budget <= 0), StopReason.LENGTH, st.reason)
            reason = jnp.where(running & (st.cache.length >= max_len), StopReason.CACHE_FULL, reason)
            active = reason == StopReason.RUNNING
            start = st.cache.length
            logits, cache = model(
                st.last_token[:, None],
                st.position[:, None],
                active[:, None],
                kv_cache=st.cache,
                **switches,
            )
            cache = dataclasses.replace(cache, length=jnp.where(active, start + 1, start))
            key, sub = jax.random.split(st.key)
            token = sample(logits[:, 0], sub, params)
            logp = token_logprobs(logits[:, 0], token, params)
            out_tokens = out_tokens.at[:, step].set(jnp.where(active, token, out_tokens[:, step]))
            out_logp = out_logp.at[:, step].set(jnp.where(active, logp, 0.0))
            if self.stop_table is None:
                hit, stop_state = jnp.full_like(token, -1), st.stop_state
            else:
                hit = self._match[st.stop_state, token]
                stop_state = self._next_state[st.stop_state, token]
            budget = st.budget - active
            reason = jnp.select(
                [~active, jnp.isin(token, self._eos), hit >= 0, budget <= 0],
                [reason, StopReason.EOS, StopReason.STOP_STRING, StopReason.LENGTH],
                StopReason.RUNNING,
            ).astype(jnp.int32)
            st = SamplerState(
                cache=cache,
                last_token=jnp.where(active, token, st.last_token),
                position=jnp.where(active, st.position + 1, st.position),
                budget=budget,
                stop_state=jnp.where(active, stop_state, st.stop_state),
                reason=reason,
                stop_match=jnp.where(active, hit, st.stop_match),
                key=key,
            )
            return step + 1, st, out_tokens, out_logp, count + active

        _, state, out_tokens, out_logp, count = jax.lax.while_loop(
            cond, body, (jnp.int32(0), state, out_tokens, out_logp, count)
        )
        # Rows still RUNNING after `steps` stay RUNNING: a later call continues them.
        return state, out_tokens, out_logp, count

    # ---- host API -----------------------------------------------------------------------
    def update_params(self, params: nnx.State) -> None:
        """Samples from new weights (same structure and shardings: compiled code is reused);
        the trainer calls this after each update."""
        if jax.tree.structure(params) != jax.tree.structure(self._params):
            raise ValueError("update_params: the new parameters do not have the sampler model's structure")
        self._params = params

    def start(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int | Sequence[int] | None = None,
        cache_len: int | None = None,
        seed: int = 0,
    ) -> SamplerState:
        """Prefills left-padded prompts (width bucketed) into a new cache.

        cache_len: slots per row, default prompt bucket + max_new_tokens; when documents will
        be appended, pass room for them too (rounded up to a multiple of KV_BLOCK). Chunk writes
        past the end are dropped, so only real tokens need room.
        """
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        budget = np.broadcast_to(np.asarray(max_new_tokens or self.max_new_tokens, np.int32), (len(prompts),))
        width = bucket(max(len(p) for p in prompts), self.prompt_buckets)
        cache_len = -(-max(cache_len or width + int(budget.max()), width) // CACHE_ROUNDING) * CACHE_ROUNDING
        tokens, mask, positions = left_pad(prompts, self.tokenizer.pad_id, width)
        cache = self._new_cache(len(prompts), cache_len)
        count = np.full((len(prompts),), width - 1, np.int32)
        cache = self._fill(self._params, cache, *self._put(tokens[:, :-1], positions[:, :-1], mask[:, :-1], count))
        return SamplerState(
            cache=cache,
            last_token=self._put(tokens[:, -1])[0],
            position=self._put(positions[:, -1])[0],
            budget=self._put(budget.copy())[0],
            stop_state=self._put(np.zeros(len(prompts), np.int32))[0],
            reason=self._put(np.zeros(len(prompts), np.int32))[0],
            stop_match=self._put(np.full(len(prompts), -1, np.int32))[0],
            key=jax.random.key(seed),
        )

    def decode(
        self, state: SamplerState, params: SamplingParams, *, steps: int | None = None
    ) -> tuple[SamplerState, DecodeOutput]:
        """Samples every RUNNING row until it stops or `steps` (default max_new_tokens) pass."""
        steps = steps or self.max_new_tokens
        window = self._decode_window(state, steps)
        state, tokens, logp, count = self._decode(self._params, state, params=params, steps=steps, window=window)
        reason, match = to_host(state.reason), to_host(state.stop_match)
        out = DecodeOutput(
            tokens=to_host(tokens),
            logprobs=to_host(logp),
            num_tokens=to_host(count),
            reason=reason,
            stop_string=[None] * state.batch,
        )
        for b in np.flatnonzero(reason == StopReason.STOP_STRING):
            if out.num_tokens[b]:  # stopped in this call
                out.stop_string[b] = self._confirm_stop(b, out, int(match[b]))
        return state, out

    def append(
        self, state: SamplerState, rows: Sequence[int], tokens: Sequence[Sequence[int]], *, charge_budget: bool = False
    ) -> SamplerState:
        """Inserts `tokens[i]` after the newest token of row `rows[i]` by chunked prefill into the
        live cache (earlier positions are not recomputed) and sets those rows RUNNING again.
        Chunks are `append_chunk` tokens wide but the last, which is half or a quarter of that
        when the rest fits (`chunk_widths`).

        charge_budget: the inserted tokens count against the row's token budget (a response
        length cap that includes retrieved documents)."""
        if len(rows) != len(tokens) or len(set(rows)) != len(rows):
            raise ValueError(f"append: rows {list(rows)} and token lists must pair up one to one")
        b = state.batch
        last, pos, length = (to_host(x) for x in (state.last_token, state.position, state.cache.length))
        feed = {r: [int(last[r]), *t[:-1]] for r, t in zip(rows, tokens) if len(t)}
        widths = chunk_widths(max([len(f) for f in feed.values()] or [0]), self.append_chunk)
        width = sum(widths)
        for r, f in feed.items():
            if length[r] + len(f) > state.cache.max_len:
                raise ValueError(
                    f"append: row {r} needs {length[r] + len(f)} of {state.cache.max_len} cache slots; "
                    "pass a larger cache_len to Sampler.start"
                )
        ids = np.full((b, width), self.tokenizer.pad_id, np.int32)
        mask = np.zeros((b, width), bool)
        positions = np.zeros((b, width), np.int32)
        for r, f in feed.items():
            ids[r, : len(f)], mask[r, : len(f)] = f, True
            positions[r, : len(f)] = pos[r] + np.arange(len(f))
        cache, lo = state.cache, 0
        for c in widths:
            count = mask[:, lo : lo + c].sum(axis=1).astype(np.int32)
            cache = self._fill(
                self._params,
                cache,
                *self._put(ids[:, lo : lo + c], positions[:, lo : lo + c], mask[:, lo : lo + c], count),
            )
            lo += c
        new_last, new_pos, reason, stop_state = (
            last.copy(),
            pos.copy(),
            to_host(state.reason).copy(),
            to_host(state.stop_state).copy(),
        )
        budget = to_host(state.budget).copy()
        for r, t in zip(rows, tokens):
            if len(t):
                new_last[r], new_pos[r] = t[-1], pos[r] + len(t)
            reason[r], stop_state[r] = StopReason.RUNNING, 0  # inserted text starts a fresh match
            if charge_budget:
                budget[r] -= len(t)
        return dataclasses.replace(
            state,
            budget=self._put(budget.astype(np.int32))[0],
            cache=cache,
            last_token=self._put(new_last.astype(np.int32))[0],
            position=self._put(new_pos.astype(np.int32))[0],
            reason=self._put(reason.astype(np.int32))[0],
            stop_state=self._put(stop_state.astype(np.int32))[0],
        )

    # ---- helpers ------------------------------------------------------------------------
    def _decode_window(self, state: SamplerState, steps: int) -> int | None:
        """Static attention window of a dense-attention model's decode call: covers every slot
        this call may write (None: block-wise attention needs none). Reads the lengths back."""
        if self.config.cache_attention != "dense":
            return None
        return kv_window(int(to_host(state.cache.length).max()) + steps, state.cache.max_len)

    def _new_cache(self, batch: int, max_len: int) -> KVCache:
        dtype = jnp.dtype(self.config.compute_dtype)
        if self.mesh is None:
            return KVCache.create(self.config, batch=batch, max_len=max_len, dtype=dtype)
        k_shape, v_shape = kv_cache_shapes(self.config, batch, max_len)
        rows = NamedSharding(self.mesh, fit_spec(batch_spec(2), (batch, max_len), self.mesh))
        lens = NamedSharding(self.mesh, fit_spec(batch_spec(1), (batch,), self.mesh))
        spec = lambda shape: NamedSharding(self.mesh, kv_cache_spec(shape, self.mesh))  # noqa: E731
        return KVCache(
            k=jnp.zeros(k_shape, dtype, device=spec(k_shape)),
            v=jnp.zeros(v_shape, dtype, device=spec(v_shape)),
            valid=jnp.zeros((batch, max_len), bool, device=rows),
            length=jnp.zeros((batch,), jnp.int32, device=lens),
        )

    def _put(self, *arrays: np.ndarray) -> list[Array]:
        """Host arrays onto the mesh, batch-sharded (or to the default device)."""
        if self.mesh is None:
            return [jnp.asarray(a) for a in arrays]
        return [
            jax.device_put(a, NamedSharding(self.mesh, fit_spec(batch_spec(a.ndim), a.shape, self.mesh)))
            for a in arrays
        ]

    def _confirm_stop(self, b: int, out: DecodeOutput, match: int) -> str | None:
        """Text-level confirmation of a token-level stop-string match."""
        text = self.tokenizer.decode(out.row(b))
        stop = self.stop_table.strings[match]
        if stop not in text:
            # The match began in text sampled by an earlier decode call of the same turn.
            log.debug("row %d: stop %r not inside this call's text %r", b, stop, text[-40:])
        return stop
