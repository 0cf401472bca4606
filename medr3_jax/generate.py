"""`python -m medr3_jax.generate`: continue one or more prompts with a policy model.

    python -m medr3_jax.generate --model smollm2_135m_instruct --chat --greedy \
        --prompt "Which enzyme is deficient in phenylketonuria?"
    python -m medr3_jax.generate --model /ckpt/Qwen2.5-7B --mesh data=1,fsdp=-1,tensor=2 \
        --temperature 0.7 --top_p 0.9 --prompt "..." --prompt "..."

Prompts are batched (left-padded into a length bucket) and decoded with the KV cache: one
prefill, then one cached step per token. The sampler issue replaces this loop with the
in-jit rollout sampler.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from medr3_jax.models.loading import load_model
from medr3_jax.models.tokenizers import Tokenizer
from medr3_jax.models.transformer import Decoder, KVCache
from medr3_jax.sharding import initialize, make_mesh, param_shardings

log = logging.getLogger("medr3_jax.generate")

PROMPT_BUCKET = 64  # prompt widths round up to a multiple of this: repeated calls reuse compiles


def sample_token(logits: jax.Array, key: jax.Array, temperature: float, top_p: float) -> jax.Array:
    """Next token [B] from f32 logits [B,V]: greedy when temperature == 0, else nucleus sampling."""
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_p < 1.0:
        order = jnp.sort(logits, axis=-1)[:, ::-1]
        cum = jnp.cumsum(jax.nn.softmax(order, axis=-1), axis=-1)
        # The smallest set whose mass reaches top_p: keep tokens whose preceding mass < top_p.
        keep = (cum - jax.nn.softmax(order, axis=-1)) < top_p
        cutoff = jnp.min(jnp.where(keep, order, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits >= cutoff, logits, -jnp.inf)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, bucket: int = PROMPT_BUCKET):
    """tokens, mask, positions [B,W] with W the longest row rounded up to `bucket`."""
    width = -(-max(len(r) for r in rows) // bucket) * bucket
    tokens = np.full((len(rows), width), pad_id, np.int32)
    mask = np.zeros((len(rows), width), bool)
    for b, row in enumerate(rows):
        tokens[b, width - len(row) :] = row
        mask[b, width - len(row) :] = True
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
    return tokens, mask, positions


def generate_ids(
    model: Decoder,
    prompts: Sequence[Sequence[int]],
    *,
    stop_ids: Sequence[int],
    pad_id: int,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
) -> list[list[int]]:
    """New token ids per prompt, each ending before its first stop id (or at the budget)."""
    graphdef, state = nnx.split(model)
    tokens, mask, positions = left_pad(prompts, pad_id)
    cache = KVCache.create(model.config, batch=len(prompts), max_len=tokens.shape[1] + max_new_tokens)

    @functools.partial(jax.jit, donate_argnames=("cache",))
    def step(state, tokens, positions, mask, cache, key):
        logits, cache = nnx.merge(graphdef, state)(tokens, positions, mask, kv_cache=cache)
        return sample_token(logits[:, -1], key, temperature, top_p), cache

    key = jax.random.key(seed)
    next_pos = positions[:, -1:] + 1
    token, cache = step(state, tokens, positions, mask, cache, key)
    out = np.zeros((len(prompts), max_new_tokens), np.int32)
    done = np.zeros(len(prompts), bool)
    lengths = np.full(len(prompts), max_new_tokens)
    stop = np.asarray(list(stop_ids), np.int32)
    ones = np.ones((len(prompts), 1), bool)
    for t in range(max_new_tokens):
        host = np.asarray(token)
        out[:, t] = host
        hit = ~done & np.isin(host, stop)
        lengths[hit] = t
        done |= hit
        if done.all() or t + 1 == max_new_tokens:
            break
        key, sub = jax.random.split(key)
        token, cache = step(state, host[:, None], next_pos, ones, cache, sub)
        next_pos = next_pos + 1
    return [out[b, : lengths[b]].tolist() for b in range(len(prompts))]


def generate_text(
    model: Decoder, tokenizer: Tokenizer, prompts: Sequence[str], *, chat: bool = False, **kwargs
) -> list[str]:
    """Continuations of text prompts (chat-templated when `chat`)."""
    if chat:
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}]) for p in prompts]
    ids = [tokenizer.encode(p) for p in prompts]
    new = generate_ids(model, ids, stop_ids=tokenizer.stop_ids, pad_id=tokenizer.pad_id, **kwargs)
    return [tokenizer.decode(row, skip_special_tokens=True) for row in new]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m medr3_jax.generate", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2_135m_instruct", help="preset with bundled weights, HF dir or .gguf")
    p.add_argument("--prompt", action="append", required=True, help="repeat for a batch")
    p.add_argument("--chat", action="store_true", help="wrap each prompt in the model's chat template")
    p.add_argument("--max_new_tokens", type=int, default=128)
    p.add_argument("--greedy", action="store_true", help="argmax decoding (the default when no --temperature)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mesh", default="data=1,fsdp=-1,tensor=1", help="e.g. data=2,fsdp=4,tensor=1")
    p.add_argument("--param_dtype", default=None, help="float32 or bfloat16 (default: f32 on CPU, bf16 elsewhere)")
    p.add_argument("--coordinator_address", default=None, help="host:port of process 0 (multi-host, non-TPU)")
    p.add_argument("--num_processes", type=int, default=None)
    p.add_argument("--process_id", type=int, default=None)
    args = p.parse_args(argv)
    if args.greedy and args.temperature:
        p.error("--greedy and --temperature are exclusive")
    if not 0.0 < args.top_p <= 1.0:
        p.error(f"--top_p must be in (0, 1], got {args.top_p}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("jax").setLevel(logging.WARNING)  # "Unable to initialize backend 'tpu'" on CPU
    args = _parse(argv)
    initialize(args.coordinator_address, args.num_processes, args.process_id)
    mesh = make_mesh(args.mesh)
    dtype = args.param_dtype or ("float32" if jax.default_backend() == "cpu" else "bfloat16")
    start = time.perf_counter()
    model, tokenizer = load_model(
        args.model, param_dtype=dtype, compute_dtype=dtype, shardings=lambda cfg: param_shardings(cfg, mesh)
    )
    log.info(
        "loaded %s (%s, %.1fM params) in %.1fs on mesh %s",
        args.model,
        dtype,
        model.config.num_params / 1e6,
        time.perf_counter() - start,
        dict(mesh.shape),
    )
    texts = generate_text(
        model,
        tokenizer,
        args.prompt,
        chat=args.chat,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    if jax.process_index() != 0:
        return 0
    for prompt, text in zip(args.prompt, texts):
        if len(args.prompt) > 1:
            print(f"### {prompt}")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
