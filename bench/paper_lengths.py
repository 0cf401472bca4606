"""Sampling at the paper's lengths: 2048-token prompts in caches of 16k slots (Med-R3's
max_prompt_length 2048 + max_response_length 14336), at the largest batch that fits one device,
with the planner's KV-cache figure beside what the device holds. Prints JSON.

    python bench/paper_lengths.py --preset qwen2_5_1_5b --out paper_lengths.json     # one GPU
    .venv/bin/python bench/paper_lengths.py --preset tiny --prompt_len 64 --cache_len 512 \
        --deep_tokens 256 --batches 4,2                                               # CPU check

For each batch of `--batches` (largest first) whose planned parameters + KV cache fit in
`--memory_fraction` of the device's memory (`memory_stats()["bytes_limit"]`; no check where the
backend reports none), it prefills the prompts, decodes `--steps` tokens (shallow: ~2k slots
live), appends `--deep_tokens` tokens to every row (a long run of retrieved passages, chunked
prefill into the live cache), decodes `--steps` more (deep: most of the cache live), and stops at
the first batch that ran; a batch that runs out of memory (compilation included) is recorded
with the error's first line and the next smaller one is tried. EOS is disabled on both decodes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rooflines import spec_roofline  # bench/ on sys.path, as for the other scripts

from medr3_jax.models.config import PRESETS, ModelConfig
from medr3_jax.models.loading import backend_overrides
from medr3_jax.models.tokenizers import byte_tokenizer
from medr3_jax.models.transformer import KV_BLOCK, Decoder
from medr3_jax.plan import abstract_mesh, kv_cache_bytes, mesh_sizes
from medr3_jax.progress import waiting
from medr3_jax.sampling import GREEDY, Sampler


def planned_bytes(config: ModelConfig, batch: int, slots: int) -> dict[str, int]:
    """What the planner counts on one device (`plan.kv_cache_bytes`, the cache's slots rounded
    as the sampler rounds them), and the parameters in their dtype."""
    slots = -(-slots // KV_BLOCK) * KV_BLOCK
    kv = kv_cache_bytes(config, batch, slots, abstract_mesh(mesh_sizes("data=1", 1)))[0]
    return {"kv_cache": kv, "params": config.num_params * np.dtype(config.param_dtype).itemsize}


def memory_stats() -> dict | None:
    stats = jax.devices()[0].memory_stats()
    keys = ("bytes_in_use", "peak_bytes_in_use", "bytes_limit")
    return {k: int(stats[k]) for k in keys if k in stats} if stats else None


def run_batch(model: Decoder, batch: int, args: argparse.Namespace) -> dict:
    """Prefill, shallow decode, deep append, deep decode for one batch size; seconds and memory."""
    tok = byte_tokenizer()  # random weights: the sampler needs pad/eos ids only
    rng = np.random.default_rng(batch)
    prompts = [rng.integers(3, model.config.vocab_size, args.prompt_len).tolist() for _ in range(batch)]
    docs = [rng.integers(3, model.config.vocab_size, args.deep_tokens).tolist() for _ in range(batch)]
    sampler = Sampler(model, tok, max_new_tokens=2 * args.steps, eos_ids=())
    rows = list(range(batch))
    out: dict = {"batch": batch}

    def sequence(times: dict) -> tuple:
        """start, shallow decode, append, deep decode (decode donates its state: one pass uses
        each state once); `times` gets each phase's seconds."""
        clock = time.perf_counter()
        state = sampler.start(prompts, cache_len=args.cache_len)
        jax.block_until_ready(state.cache.k)
        times["prefill_s"], clock = time.perf_counter() - clock, time.perf_counter()
        cache_bytes = int(sum(x.nbytes for x in (state.cache.k, state.cache.v, state.cache.valid, state.cache.length)))
        slots = int(state.cache.max_len)
        state, shallow = sampler.decode(state, GREEDY, steps=args.steps)  # host arrays: synced
        times["decode_step_ms_shallow"], clock = 1e3 * (time.perf_counter() - clock) / args.steps, time.perf_counter()
        state = sampler.append(state, rows=rows, tokens=docs)
        jax.block_until_ready(state.cache.k)
        times["append_s"], clock = time.perf_counter() - clock, time.perf_counter()
        live = int(np.asarray(state.cache.length).max())
        state, deep = sampler.decode(state, GREEDY, steps=args.steps)
        times["decode_step_ms_deep"] = 1e3 * (time.perf_counter() - clock) / args.steps
        if not ((shallow.num_tokens == args.steps).all() and (deep.num_tokens == args.steps).all()):
            raise RuntimeError("rows stopped early (EOS must be disabled)")
        return cache_bytes, slots, live

    clock = time.perf_counter()
    sequence({})  # compiles every shape
    out["first_pass_s"] = time.perf_counter() - clock
    cache_bytes, slots, live = sequence(out)
    out |= {"cache_slots": slots, "kv_cache_bytes_on_device": cache_bytes, "live_slots_deep": live}
    out["memory"] = memory_stats()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="qwen2_5_1_5b", help=f"one of {sorted(PRESETS)} (random weights)")
    parser.add_argument("--prompt_len", type=int, default=2048)
    parser.add_argument("--cache_len", type=int, default=16384, help="slots per row")
    parser.add_argument("--deep_tokens", type=int, default=12288, help="tokens appended before the deep decode")
    parser.add_argument("--steps", type=int, default=32, help="decode steps timed, shallow and deep")
    parser.add_argument("--batches", default="128,64,32,16,8", help="largest first; the first that runs is kept")
    parser.add_argument("--memory_fraction", type=float, default=0.85, help="of bytes_limit, for the plan check")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.prompt_len + args.deep_tokens + 2 * args.steps + 1 > args.cache_len:
        raise SystemExit("error: --prompt_len + --deep_tokens + 2 x --steps must fit in --cache_len")
    config = PRESETS[args.preset].replace(**backend_overrides())
    model = Decoder(config, rngs=nnx.Rngs(0))
    device = jax.devices()[0]
    result: dict = {
        "benchmark": "paper_lengths", "preset": args.preset, "dtype": config.compute_dtype,
        "cache_attention": config.cache_attention, "prompt_len": args.prompt_len, "cache_len": args.cache_len,
        "deep_tokens": args.deep_tokens, "steps": args.steps,
        "device": {"kind": device.device_kind, "backend": jax.default_backend(), "platform": platform.platform(),
                   "jax": jax.__version__},
        "roofline_spec": spec_roofline(device.device_kind), "tried": [],
    }  # fmt: skip
    limit = (memory_stats() or {}).get("bytes_limit")
    for batch in (int(b) for b in args.batches.split(",") if b):
        planned = planned_bytes(config, batch, args.cache_len)
        entry = {"batch": batch, "planned_bytes": planned}
        if limit and sum(planned.values()) > args.memory_fraction * limit:
            result["tried"].append(entry | {"skipped": f"planned {sum(planned.values()) / 2**30:.2f} GiB > "
                                                       f"{args.memory_fraction} x {limit / 2**30:.2f} GiB"})  # fmt: skip
            continue
        try:
            with waiting(f"bench/paper_lengths.py: batch {batch}, {args.cache_len} slots"):
                measured = run_batch(model, batch, args)
        except Exception as err:  # (out of memory, in compilation or at run time: try smaller)
            if "RESOURCE_EXHAUSTED" not in str(err) and "out of memory" not in str(err).lower():
                raise
            result["tried"].append(entry | {"error": str(err).strip().splitlines()[0][:300]})
            continue
        measured["planned_kv_matches_device"] = measured["kv_cache_bytes_on_device"] == planned["kv_cache"]
        result["tried"].append(entry | measured)
        result["largest_batch"] = batch
        break
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
