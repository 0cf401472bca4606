"""The serving-engine peer of `bench/sampler.py --real_sizes` (issue 22 item 2): vLLM's offline
`LLM.generate` on the same model shapes (random bf16 weights written as a transformers directory),
the same prompt length and the same greedy `new_tokens` per row with end of text ignored, on the
same card, in tokens/s per batch. gpu.sh runs it in its own process after the sampler part (vLLM
reserves `--memory_fraction` of the card for itself), so both figures come from one invocation of
gpu.sh on one machine.

When vLLM cannot be imported, it prints {"skipped": "..."} and exits 0: the summary then says why
there is no vLLM figure (vLLM's wheel is several hundred MB and the lent GPU machines have no
package index, so it has not run there; the static-cache, compiled transformers peer is the
strongest one measured).

    python bench/vllm_peer.py --model qwen2_5_1_5b --batches 64,128,256 [--out F]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time

import numpy as np

from medr3_jax.models.config import PRESETS


def skipped_reason() -> str | None:
    """Why the vLLM peer cannot run here, or None when it can."""
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not importable here (pip install vllm on a CUDA machine to add this peer)"
    import torch  # noqa: PLC0415

    if not torch.cuda.is_available():
        return "torch sees no CUDA device: vLLM's peer figures are GPU figures"
    return None


def vllm_tokens_per_s(model_dir: str, batches: list[int], prompt_len: int, new_tokens: int, vocab: int,
                      memory_fraction: float) -> list[dict]:  # fmt: skip
    """tokens/s of `LLM.generate` per batch: greedy, exactly `new_tokens` per row (end of text
    ignored), prompts of `prompt_len` random ids; one warm-up call of the largest batch first (its
    CUDA graphs and compiled kernels stay out of the timing)."""
    from vllm import LLM, SamplingParams  # noqa: PLC0415
    from vllm.inputs import TokensPrompt  # noqa: PLC0415

    llm = LLM(model=model_dir, skip_tokenizer_init=True, dtype="bfloat16", seed=0,
              gpu_memory_utilization=memory_fraction, max_model_len=prompt_len + new_tokens,
              max_num_seqs=max(batches))  # fmt: skip
    params = SamplingParams(temperature=0.0, max_tokens=new_tokens, min_tokens=new_tokens, ignore_eos=True,
                            detokenize=False)  # fmt: skip
    rng = np.random.default_rng(0)

    def prompts(batch: int) -> list:
        return [TokensPrompt(prompt_token_ids=rng.integers(0, vocab, prompt_len).tolist()) for _ in range(batch)]

    llm.generate(prompts(max(batches)), params, use_tqdm=False)
    rows = []
    for batch in batches:
        batch_prompts = prompts(batch)
        start = time.perf_counter()
        outs = llm.generate(batch_prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - start
        lengths = {len(o.outputs[0].token_ids) for o in outs}
        if lengths != {new_tokens}:
            raise RuntimeError(f"vLLM generated {sorted(lengths)} tokens per row, not {new_tokens}")
        rows.append({"batch": batch, "vllm_tok_s": batch * new_tokens / seconds, "seconds": seconds})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2_5_1_5b", help="a model preset (random bf16 weights)")
    parser.add_argument("--batches", default="64,128,256", help="comma-separated batch sizes")
    parser.add_argument("--prompt_len", type=int, default=200, help="as bench/sampler.py --real_sizes")
    parser.add_argument("--new_tokens", type=int, default=128, help="as bench/sampler.py --real_sizes")
    parser.add_argument("--memory_fraction", type=float, default=0.85, help="vLLM's gpu_memory_utilization")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    if args.model not in PRESETS:
        raise SystemExit(f"error: --model: unknown preset {args.model!r}; known: {sorted(PRESETS)}")
    config = PRESETS[args.model]
    result = {"benchmark": "vllm_peer", "model": args.model, "prompt_len": args.prompt_len,
              "new_tokens": args.new_tokens}  # fmt: skip
    reason = skipped_reason()
    if reason is not None:
        result["skipped"] = reason
    else:
        import torch  # noqa: PLC0415
        import vllm  # noqa: PLC0415
        from peers import hf_random_model  # noqa: PLC0415 -- bench/ on sys.path, as for the other scripts

        result["vllm"] = vllm.__version__
        result["device"] = torch.cuda.get_device_name(0)
        batches = [int(b) for b in args.batches.split(",") if b]
        with tempfile.TemporaryDirectory() as model_dir:
            hf = hf_random_model(config)
            hf.save_pretrained(model_dir)
            del hf
            torch.cuda.empty_cache()
            result["decode"] = vllm_tokens_per_s(model_dir, batches, args.prompt_len, args.new_tokens,
                                                 config.vocab_size, args.memory_fraction)  # fmt: skip
    text = json.dumps(result, indent=1)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    print(text)
    print(f"vllm_peer: {result.get('skipped') or 'measured'}", file=sys.stderr)


if __name__ == "__main__":
    main()
