"""Sampler benchmark: tokens/s vs transformers `generate`, as a share of this machine's
roofline, and the cost of appending retrieved passages vs re-prefilling. Prints JSON.

    .venv/bin/python bench/sampler.py                  # SmolLM2-135M on CPU vs HF (torch CPU)
    .venv/bin/python bench/sampler.py --real_sizes     # Qwen2.5-1.5B / LLaMA-3.2-1B shapes, random
                                                       # bf16 weights, batch 64-256 (for one GPU)
    python bench/sampler.py --real_sizes --hf --budget_s 300 --out result.json   # on a GPU machine

`--real_sizes --hf` compares with transformers `generate` on the same device (random weights of
the same shapes, bf16); `--variants` times the implementation switches of the cached decoder
(`ModelConfig.cache_attention`, `layer_unroll`) at one batch size; `--budget_s` starts no new
measurement after that many seconds (the JSON says what was skipped) and `--out` rewrites the
JSON after every measurement, so a run cut short still reports what it measured.

Decoding runs with EOS disabled so every row generates exactly `--new_tokens` tokens on both
sides; times include prefill and exclude compilation (a warm-up call of the same shapes), and
prefill and decode are also reported apart.
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
from peers import hf_random_model, synchronize  # bench/peers.py (scripts run with bench/ on sys.path)
from rooflines import spec_roofline

from medr3_jax.models.config import PRESETS, ModelConfig
from medr3_jax.models.loading import backend_overrides
from medr3_jax.models.transformer import Decoder
from medr3_jax.progress import waiting
from medr3_jax.sampling import GREEDY, Sampler

# Real shapes for the accelerator run (model presets, from the models' config.json).
REAL_SHAPES = ("qwen2_5_1_5b", "llama3_2_1b")


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
    a = jax.random.normal(jax.random.key(0), (4096, 4096), dtype)  # not ones: constant data runs faster
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


def spec_shares(config: ModelConfig, batch: int, context: float, spec: dict | None, ours_tok_s: float,
                timed: dict) -> dict:  # fmt: skip
    """The same shares against the card's specification (bench/rooflines.py); {} off the table."""
    if spec is None:
        return {}
    bound = decode_bound(config, batch, context, spec)
    return {"spec_roofline_tok_s": bound, "ours_share_of_spec": ours_tok_s / bound,
            "decode_share_of_spec": batch / (timed["decode_step_ms"] / 1e3) / bound}  # fmt: skip


def ours_timed(
    sampler: Sampler, prompts: list[list[int]], new_tokens: int, cache_len: int | None = None
) -> dict[str, float]:
    """Tokens/s of prefill + decode (compiled beforehand), and the two parts apart."""

    def once() -> tuple[float, float]:
        start = time.perf_counter()
        state = sampler.start(prompts, max_new_tokens=new_tokens, cache_len=cache_len)
        jax.block_until_ready(state.cache.k)
        prefilled = time.perf_counter()
        _, out = sampler.decode(state, GREEDY, steps=new_tokens)  # returns host arrays: synced
        if not (out.num_tokens == new_tokens).all():
            raise RuntimeError(f"rows stopped early: {out.num_tokens.tolist()} (EOS must be disabled)")
        return prefilled - start, time.perf_counter() - prefilled

    start = time.perf_counter()
    once()
    first_call = time.perf_counter() - start
    prefill, decode = min((once() for _ in range(2)), key=sum)
    return {
        "ours_tok_s": len(prompts) * new_tokens / (prefill + decode),
        "prefill_s": prefill,
        "decode_step_ms": 1e3 * decode / new_tokens,
        "first_call_s": first_call,  # compilation included
    }


def hf_tokens_per_s(
    hf_model, prompts: list[list[int]], new_tokens: int, pad_id: int, repeats: int = 2, static: bool = False
) -> float:
    """transformers `generate` (greedy) on the model's device: the best of `repeats` timed runs,
    as for ours (single runs on the 2-core CPU varied by 20-45%). Its default dynamic cache, or
    with `static` a static cache, which transformers' `generate` pairs with `torch.compile` of
    the forward by itself on CUDA (`_valid_auto_compile_criteria`); the warm-up is then a whole
    call of the same shapes, so compilation stays out of the timing."""
    import torch  # noqa: PLC0415

    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, width - len(p) :], attn[b, width - len(p) :] = torch.tensor(p), 1
    ids, attn = ids.to(hf_model.device), attn.to(hf_model.device)
    kwargs = dict(
        attention_mask=attn, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad_id
    )
    if static:
        kwargs["cache_implementation"] = "static"
    with torch.no_grad():
        if static:  # compiles for these very shapes
            hf_model.generate(ids, **kwargs)
        else:
            hf_model.generate(
                ids[:, :8], attention_mask=attn[:, :8], max_new_tokens=2, do_sample=False, pad_token_id=pad_id
            )
        synchronize(hf_model)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            out = hf_model.generate(ids, **kwargs)
            synchronize(hf_model)
            best = min(best, time.perf_counter() - start)
    if out.shape[1] != width + new_tokens:
        raise RuntimeError(f"transformers generated {out.shape[1] - width} tokens, not {new_tokens}")
    return len(prompts) * new_tokens / best


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
    model, tok = load_model("smollm2_135m_instruct", **backend_overrides())  # as generate/train run it
    folder, name = os.path.split(assets.smollm2_gguf())
    hf = transformers.LlamaForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    prompt = tok.encode(
        tok.apply_chat_template(
            [{"role": "user", "content": "Explain the causes, diagnosis and treatment of heart failure."}]
        )
    )
    roof = machine_roofline()
    spec = spec_roofline(jax.devices()[0].device_kind)
    sampler = Sampler(model, tok, max_new_tokens=args.new_tokens, eos_ids=())
    rows = []
    for batch in args.batches:
        prompts = [prompt] * batch
        timed = ours_timed(sampler, prompts, args.new_tokens)
        ours = timed["ours_tok_s"]
        theirs = hf_tokens_per_s(hf, prompts, args.new_tokens, tok.pad_id)
        bound = decode_bound(model.config, batch, len(prompt) + args.new_tokens / 2, roof)
        rows.append(
            {"batch": batch}
            | timed
            | {
                "hf_tok_s": theirs,
                "speedup_vs_hf": ours / theirs,
                "roofline_tok_s": bound,
                "ours_share_of_roofline": ours / bound,
                "hf_share_of_roofline": theirs / bound,
            }
            | spec_shares(model.config, batch, len(prompt) + args.new_tokens / 2, spec, ours, timed)
        )
    append = append_rows(model, tok, prompt, args)
    return {"model": "SmolLM2-135M-Instruct (f32)", "roofline": roof, "roofline_spec": spec, "decode": rows,
            "append_vs_reprefill": append}  # fmt: skip


class Budget:
    """Stops starting measurements after `seconds`; rewrites the JSON at `out` after each one;
    reports the measurement under way on stderr (`medr3_jax.progress`)."""

    def __init__(self, seconds: float | None, out: str | None, result: dict):
        self.deadline = time.monotonic() + seconds if seconds else float("inf")
        self.out, self.result = out, result
        self.skipped: list[str] = []
        self.current = None

    def allows(self, what: str) -> bool:
        self.done()
        if time.monotonic() < self.deadline:
            self.current = waiting(f"bench/sampler.py: {what}")
            return True
        self.skipped.append(what)
        self.result["skipped_over_budget"] = self.skipped
        self.save()
        return False

    def done(self) -> None:
        """The measurement under way has ended (its progress report closes)."""
        if self.current is not None:
            self.current.close()
            self.current = None

    def save(self) -> None:
        if self.out:
            with open(self.out, "w", encoding="utf-8") as fh:
                json.dump(self.result, fh, indent=1)


def parse_variant(spec: str, num_layers: int) -> dict:
    """'dense/all' -> {"cache_attention": "dense", "layer_unroll": num_layers}."""
    attn, _, unroll = spec.partition("/")
    return {"cache_attention": attn, "layer_unroll": num_layers if unroll == "all" else int(unroll or 1)}


def real_config(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise SystemExit(f"--models: unknown preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name].replace(**backend_overrides())  # what train/generate run on this backend


def bench_real_sizes(args, result: dict) -> dict:
    """For each model of `args.models`: the batch sweep (ours, and transformers with --hf), then
    append vs re-prefill, then the implementation variants at `args.variant_batch` — in that
    order of importance across models, so a budget cuts the least important first."""
    from medr3_jax.models.tokenizers import byte_tokenizer  # noqa: PLC0415

    tok = byte_tokenizer()  # random weights: the sampler needs pad/eos ids only, no vocabulary
    budget = Budget(args.budget_s, args.out, result)
    result["roofline"] = roof = machine_roofline()
    result["roofline_spec"] = spec = spec_roofline(jax.devices()[0].device_kind)
    result["models"] = {}
    rng = np.random.default_rng(0)
    n = args.prompt_len
    random_prompts = lambda config, batch: [rng.integers(0, config.vocab_size, n).tolist() for _ in range(batch)]  # noqa: E731
    models = {}
    for name in args.models:
        config = real_config(name)
        models[name] = model = Decoder(config, rngs=nnx.Rngs(0))
        sampler = Sampler(model, tok, max_new_tokens=args.new_tokens, eos_ids=())
        entry = result["models"][name] = {
            "params": config.num_params,
            "dtype": config.param_dtype,
            "cache_attention": config.cache_attention,
            "decode": [],
        }
        hf = hf_random_model(config) if args.hf else None
        for batch in args.batches:
            if not budget.allows(f"{name} batch {batch}"):
                break
            prompts = random_prompts(config, batch)
            row = {"batch": batch} | ours_timed(sampler, prompts, args.new_tokens, args.cache_len)
            bound = decode_bound(config, batch, n + args.new_tokens / 2, roof)
            row |= {
                "roofline_tok_s": bound,
                "ours_share_of_roofline": row["ours_tok_s"] / bound,
                "decode_share_of_roofline": batch / (row["decode_step_ms"] / 1e3) / bound,
            }
            row |= spec_shares(config, batch, n + args.new_tokens / 2, spec, row["ours_tok_s"], row)
            if hf is not None:
                # One timed run: GPU timings are steady, and the device budget is tight.
                row["hf_tok_s"] = hf_tokens_per_s(hf, prompts, args.new_tokens, tok.pad_id, repeats=1)
                row["speedup_vs_hf"] = row["ours_tok_s"] / row["hf_tok_s"]
            if hf is not None and args.hf_static and budget.allows(f"{name} batch {batch} static-cache peer"):
                # The stronger peer: static cache, forward compiled by generate itself on CUDA.
                row["hf_static_tok_s"] = hf_tokens_per_s(hf, prompts, args.new_tokens, tok.pad_id, 1, static=True)
                row["hf_static_compiled"] = hf.device.type == "cuda"
                row["speedup_vs_hf_static"] = row["ours_tok_s"] / row["hf_static_tok_s"]
            entry["decode"].append(row)
            budget.save()
        del hf, sampler
    for name, model in models.items():
        if args.append_chunks and budget.allows(f"{name} append"):
            prompt = random_prompts(model.config, 1)[0]
            result["models"][name]["append_vs_reprefill"] = append_rows(model, tok, prompt, args)
            budget.save()
    for name, model in models.items():
        variants = result["models"][name]["variants"] = []
        for spec in args.variants:
            impl = parse_variant(spec, model.config.num_layers)
            variant = Decoder(model.config.replace(**impl), rngs=nnx.Rngs(0))
            nnx.update(variant, nnx.state(model, nnx.Param))
            sampler = Sampler(variant, tok, max_new_tokens=args.new_tokens, eos_ids=())
            for batch in args.variant_batches:
                if not budget.allows(f"{name} variant {spec} batch {batch}"):
                    break
                prompts = random_prompts(model.config, batch)
                timed = ours_timed(sampler, prompts, args.new_tokens, args.cache_len)
                variants.append({"variant": spec, "batch": batch, "cache_len": args.cache_len} | impl | timed)
                budget.save()
            del variant, sampler
    budget.done()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real_sizes", action="store_true", help="real model shapes, random bf16 weights")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes")
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--append_batch", type=int, default=None, help="rows in the append benchmark")
    parser.add_argument("--append_chunks", default="256,320", help="Sampler.append_chunk values to compare")
    real = parser.add_argument_group("--real_sizes only")
    real.add_argument("--models", default=",".join(REAL_SHAPES), help="model presets (random bf16 weights)")
    real.add_argument("--prompt_len", type=int, default=200)
    real.add_argument("--hf", action="store_true", help="also time transformers generate on the same device")
    real.add_argument(
        "--hf_static",
        action="store_true",
        help="with --hf: also generate with a static cache (torch.compile'd by transformers on CUDA)",
    )
    real.add_argument("--variants", default="", help="e.g. blockwise/1,dense/1,dense/all (cache_attention/unroll)")
    real.add_argument("--variant_batches", default="128", help="comma-separated batch sizes of the variants")
    real.add_argument("--cache_len", type=int, default=None, help="cache slots per row (default: prompt + new)")
    real.add_argument("--budget_s", type=float, default=None, help="start no measurement after this many seconds")
    real.add_argument("--out", default=None, help="also write the JSON here, after every measurement")
    args = parser.parse_args()
    default = "64,128,256" if args.real_sizes else "1,8,32"
    args.batches = [int(b) for b in (default if args.batches is None else args.batches).split(",") if b]
    args.append_batch = args.append_batch or (64 if args.real_sizes else 2)
    args.append_chunks = [int(c) for c in args.append_chunks.split(",") if c]  # "": no append benchmark
    args.variant_batches = [int(b) for b in args.variant_batches.split(",") if b]
    args.models = [m for m in args.models.split(",") if m]
    args.variants = [v for v in args.variants.split(",") if v]
    device = jax.devices()[0]
    result: dict = {
        "device": {
            "backend": jax.default_backend(),
            "kind": device.device_kind,
            "count": jax.device_count(),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "jax": jax.__version__,
        }
    }
    result |= bench_real_sizes(args, result) if args.real_sizes else bench_smollm2(args)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
