"""Sampler benchmark: tokens/s vs transformers `generate`, as a share of this machine's
roofline, and the cost of appending retrieved passages vs re-prefilling. Prints JSON.

    .venv/bin/python bench/sampler.py                  # SmolLM2-135M on CPU vs HF (torch CPU)
    .venv/bin/python bench/sampler.py --real_sizes     # Qwen2.5-1.5B / LLaMA-3.2-1B shapes, random
                                                       # bf16 weights, batch 64-256 (for one GPU)

Decoding runs with EOS disabled so every row generates exactly `--new_tokens` tokens on both
sides; times include prefill and exclude compilation (a warm-up call of the same shapes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from medr3_jax.models.config import ModelConfig, RopeScaling
from medr3_jax.models.transformer import Decoder
from medr3_jax.sampling import GREEDY, Sampler

# Real shapes for the accelerator run (from the models' config.json).
REAL_SHAPES = {
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
        rope_theta=1e6,
        qkv_bias=True,
        tie_word_embeddings=True,
        max_position_embeddings=32768,
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
    ),
}


def _time(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best


def machine_roofline() -> dict[str, float]:
    """Measured memory read bandwidth (a jitted sum over 1 GB) and f32/bf16 matmul FLOP/s."""
    big = jnp.ones((256 * 1024 * 1024,), jnp.float32)
    total = jax.jit(jnp.sum)
    total(big).block_until_ready()
    bandwidth = big.nbytes / _time(lambda: total(big), 3)
    dtype = jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
    a = jnp.ones((4096, 4096), dtype)
    mm = jax.jit(lambda x: x @ x)
    mm(a).block_until_ready()
    flops = 2 * 4096**3 / _time(lambda: mm(a), 3)
    return {"mem_bandwidth_gb_s": bandwidth / 1e9, "matmul_tflop_s": flops / 1e12}


def decode_bound(config: ModelConfig, batch: int, context: float, roof: dict[str, float]) -> float:
    """Tokens/s bound of one decode step: max(bytes / bandwidth, flops / peak), per token of batch."""
    itemsize = jnp.dtype(config.param_dtype).itemsize
    kv_bytes = 2 * config.num_layers * batch * context * config.num_kv_heads * config.head_dim * itemsize
    step_bytes = config.num_params * itemsize + kv_bytes
    step_flops = (
        2 * config.num_params * batch + 4 * config.num_layers * batch * context * config.num_heads * config.head_dim
    )
    seconds = max(step_bytes / (roof["mem_bandwidth_gb_s"] * 1e9), step_flops / (roof["matmul_tflop_s"] * 1e12))
    return batch / seconds


def ours_tokens_per_s(sampler: Sampler, prompts: list[list[int]], new_tokens: int) -> float:
    run = lambda: sampler.decode(sampler.start(prompts, max_new_tokens=new_tokens), GREEDY, steps=new_tokens)[1].tokens  # noqa: E731
    run()  # compile
    return len(prompts) * new_tokens / _time(run)


def hf_tokens_per_s(hf_model, prompts: list[list[int]], new_tokens: int, pad_id: int) -> float:
    import torch  # noqa: PLC0415

    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, width - len(p) :], attn[b, width - len(p) :] = torch.tensor(p), 1
    kwargs = dict(
        attention_mask=attn, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad_id
    )
    with torch.no_grad():
        hf_model.generate(
            ids[:, :8], attention_mask=attn[:, :8], max_new_tokens=2, do_sample=False, pad_token_id=pad_id
        )
        start = time.perf_counter()
        hf_model.generate(ids, **kwargs)
    return len(prompts) * new_tokens / (time.perf_counter() - start)


def append_vs_reprefill(
    sampler: Sampler, prompt: list[int], batch: int, turns: int, passages: int, passage_len: int
) -> dict:
    """`turns` search turns, each inserting `passages` x `passage_len` tokens: appending into
    the live cache vs prefilling the whole context again at every turn."""
    rng = np.random.default_rng(0)
    docs = [rng.integers(100, 1000, passages * passage_len).tolist() for _ in range(turns)]
    cache_len = len(prompt) + turns * (passages * passage_len + 64) + 128

    def with_append():
        state = sampler.start([prompt] * batch, max_new_tokens=16, cache_len=cache_len)
        for doc in docs:  # a rollout waits for each turn (retrieval happens on the host)
            state = sampler.append(state, rows=list(range(batch)), tokens=[doc] * batch)
            jax.block_until_ready(state.cache.k)
        return state.cache.k

    def with_reprefill():
        context, out = list(prompt), None
        for doc in docs:
            context = context + doc
            out = sampler.start([context] * batch, max_new_tokens=16, cache_len=cache_len).cache.k
            jax.block_until_ready(out)
        return out

    with_append(), with_reprefill()  # compile every shape once
    t_append, t_full = _time(with_append), _time(with_reprefill)
    return {
        "batch": batch,
        "turns": turns,
        "tokens_per_turn": passages * passage_len,
        "append_s": t_append,
        "reprefill_s": t_full,
        "speedup": t_full / t_append,
    }


def append_rows(model: Decoder, tok, prompt: list[int], args) -> list[dict]:
    """4 search turns of 5 passages x 128 tokens, for each append chunk size in `args`."""
    return [
        append_vs_reprefill(
            Sampler(model, tok, max_new_tokens=16, append_chunk=chunk, eos_ids=()), prompt, args.append_batch, 4, 5, 128
        )
        | {"append_chunk": chunk}
        for chunk in args.append_chunks
    ]


def bench_smollm2(args) -> dict:
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    from medr3_jax import assets  # noqa: PLC0415
    from medr3_jax.models.loading import load_model  # noqa: PLC0415

    torch.set_num_threads(os.cpu_count() or 1)
    model, tok = load_model("smollm2_135m_instruct")
    folder, name = os.path.split(assets.smollm2_gguf())
    hf = transformers.LlamaForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    prompt = tok.encode(
        tok.apply_chat_template(
            [{"role": "user", "content": "Explain the causes, diagnosis and treatment of heart failure."}]
        )
    )
    roof = machine_roofline()
    sampler = Sampler(model, tok, max_new_tokens=args.new_tokens, eos_ids=())
    rows = []
    for batch in args.batches:
        prompts = [prompt] * batch
        ours = ours_tokens_per_s(sampler, prompts, args.new_tokens)
        theirs = hf_tokens_per_s(hf, prompts, args.new_tokens, tok.pad_id)
        bound = decode_bound(model.config, batch, len(prompt) + args.new_tokens / 2, roof)
        rows.append(
            {
                "batch": batch,
                "ours_tok_s": ours,
                "hf_tok_s": theirs,
                "speedup_vs_hf": ours / theirs,
                "roofline_tok_s": bound,
                "ours_share_of_roofline": ours / bound,
                "hf_share_of_roofline": theirs / bound,
            }
        )
    append = append_rows(model, tok, prompt, args)
    return {"model": "SmolLM2-135M-Instruct (f32)", "roofline": roof, "decode": rows, "append_vs_reprefill": append}


def bench_real_sizes(args) -> dict:
    from medr3_jax.models.tokenizers import byte_tokenizer  # noqa: PLC0415

    tok = byte_tokenizer()  # random weights: the sampler needs pad/eos ids only, no vocabulary
    roof = machine_roofline()
    out = {"roofline": roof, "models": {}}
    rng = np.random.default_rng(0)
    for name, config in REAL_SHAPES.items():
        config = config.replace(param_dtype="bfloat16", compute_dtype="bfloat16")
        model = Decoder(config, rngs=nnx.Rngs(0))
        sampler = Sampler(model, tok, max_new_tokens=args.new_tokens, eos_ids=())
        rows = []
        for batch in args.batches:
            prompts = [rng.integers(0, 150000, 200).tolist() for _ in range(batch)]
            ours = ours_tokens_per_s(sampler, prompts, args.new_tokens)
            bound = decode_bound(config, batch, 200 + args.new_tokens / 2, roof)
            rows.append(
                {"batch": batch, "ours_tok_s": ours, "roofline_tok_s": bound, "ours_share_of_roofline": ours / bound}
            )
        append = append_rows(model, tok, prompts[0][:200], args)
        out["models"][name] = {"decode": rows, "append_vs_reprefill": append}
        del model, sampler
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real_sizes", action="store_true", help="real model shapes, random bf16 weights")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes")
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--append_batch", type=int, default=None, help="rows in the append benchmark")
    parser.add_argument("--append_chunks", default="256,320", help="Sampler.append_chunk values to compare")
    args = parser.parse_args()
    default = "64,128,256" if args.real_sizes else "1,8,32"
    args.batches = [int(b) for b in (args.batches or default).split(",")]
    args.append_batch = args.append_batch or (64 if args.real_sizes else 2)
    args.append_chunks = [int(c) for c in args.append_chunks.split(",")]
    result = bench_real_sizes(args) if args.real_sizes else bench_smollm2(args)
    device = jax.devices()[0]
    result["device"] = {
        "backend": jax.default_backend(),
        "kind": device.device_kind,
        "count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "jax": jax.__version__,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
