"""`python -m medr3_jax.generate`: continue one or more prompts with a policy model.

    python -m medr3_jax.generate --model smollm2_135m_instruct --chat --greedy \
        --prompt "Which enzyme is deficient in phenylketonuria?"
    python -m medr3_jax.generate --model /ckpt/Qwen2.5-7B --mesh data=1,fsdp=-1,tensor=2 \
        --temperature 0.7 --top_p 0.9 --prompt "..." --prompt "..."
    python -m medr3_jax.generate --checkpoint runs/medr3 --chat --prompt "..."   # a trained policy

Prompts are batched (left-padded into a length bucket), prefilled into a KV cache and
decoded by the rollout sampler's in-jit loop (`medr3_jax.sampling.Sampler`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Sequence

import jax
from jax.sharding import Mesh

from medr3_jax.cli import ArgumentParser, entry_point
from medr3_jax.models.loading import backend_overrides, load_model
from medr3_jax.models.tokenizers import Tokenizer
from medr3_jax.models.transformer import Decoder
from medr3_jax.sampling import GREEDY, Sampler, SamplingParams
from medr3_jax.sharding import add_process_flags, initialize_from, make_mesh, param_shardings

log = logging.getLogger("medr3_jax.generate")
DEFAULT_MODEL = "smollm2_135m_instruct"


def generate_text(
    model: Decoder,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    *,
    chat: bool = False,
    max_new_tokens: int = 128,
    params: SamplingParams = GREEDY,
    seed: int = 0,
    mesh: Mesh | None = None,
) -> list[str]:
    """Continuations of text prompts (chat-templated when `chat`), up to the first stop id."""
    if chat:
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}]) for p in prompts]
    sampler = Sampler(model, tokenizer, max_new_tokens=max_new_tokens, mesh=mesh)
    _, out = sampler.decode(sampler.start([tokenizer.encode(p) for p in prompts], seed=seed), params)
    return [tokenizer.decode(out.row(b), skip_special_tokens=True) for b in range(len(prompts))]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m medr3_jax.generate", description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="preset with bundled weights, HF dir or .gguf "
                   f"(default {DEFAULT_MODEL})")  # fmt: skip
    p.add_argument("--checkpoint", default=None, help="instead of --model: a training run workdir, stage, "
                   "checkpoints dir or step dir (local or gs://; latest stage and step), in its own dtype")  # fmt: skip
    p.add_argument("--prompt", action="append", required=True, help="repeat for a batch")
    p.add_argument("--chat", action="store_true", help="wrap each prompt in the model's chat template")
    p.add_argument("--max_new_tokens", type=int, default=128)
    p.add_argument("--greedy", action="store_true", help="argmax decoding (the default when no --temperature)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top_k", type=int, default=0, help="0 = off")
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mesh", default="data=1,fsdp=-1,tensor=1", help="e.g. data=2,fsdp=4,tensor=1")
    p.add_argument("--param_dtype", default=None, help="float32 or bfloat16 (default: f32 on CPU, bf16 elsewhere)")
    add_process_flags(p)
    args = p.parse_args(argv)
    if args.checkpoint and (args.model or args.param_dtype):
        p.error("--checkpoint loads the trained policy in its own dtype: give it without --model and --param_dtype")
    args.model = args.model or (None if args.checkpoint else DEFAULT_MODEL)
    if args.greedy and args.temperature:
        p.error("--greedy and --temperature are exclusive")
    try:
        args.params = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    except ValueError as err:
        p.error(str(err))
    return args


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("jax").setLevel(logging.WARNING)  # "Unable to initialize backend 'tpu'" on CPU
    args = _parse(argv)
    initialize_from(args)
    mesh = make_mesh(args.mesh)
    shardings = lambda cfg: param_shardings(cfg, mesh)  # noqa: E731
    start = time.perf_counter()
    if args.checkpoint:
        from medr3_jax.trainer.policies import load_policy  # noqa: PLC0415 -- the trainer only when asked

        model, tokenizer, source = load_policy(checkpoint=args.checkpoint, shardings=shardings)
        name = f"{source['checkpoint']} ({source['name']})"
    else:
        model, tokenizer = load_model(args.model, shardings=shardings, **backend_overrides(args.param_dtype))
        name = args.model
    log.info(
        "loaded %s (%s, %.1fM params) in %.1fs on mesh %s",
        name,
        model.config.param_dtype,
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
        params=args.params,
        seed=args.seed,
        mesh=mesh,
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
