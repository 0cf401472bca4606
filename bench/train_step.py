"""Train-step benchmark: tokens/s and model FLOPs utilisation of our jitted policy update vs a
transformers (torch) training step of the same model and batch, and the per-phase breakdown of
full RL steps (rollout, retrieval, reward, update). Prints JSON.

    .venv/bin/python bench/train_step.py                 # SmolLM2-135M f32 on CPU, batch 4 x 256
    .venv/bin/python bench/train_step.py --rl_steps 0    # the train step comparison only
    python bench/train_step.py --preset qwen2_5_1_5b --rows 8 --width 1024 --rl_steps 0   # one GPU

`--preset` times a model preset with random weights (bf16 on an accelerator, f32 on CPU)
against a transformers model of the same shapes on the same device. On an accelerator both sides
train as mixed precision does: ours keeps f32 master weights and f32 AdamW state
(`OptimizerConfig.master_dtype`) and runs the model in bf16; the transformers peer holds f32
weights and runs its forward under `torch.autocast(bfloat16)`. The peer runs first, in a process
of its own, so that each side has the whole device memory.

MFU = 6 x params x tokens / seconds / peak: `mfu` against the peak matmul FLOP/s measured in the same
run, `mfu_spec` against the card's data sheet (bench/rooflines.py; accelerators only).
Times exclude compilation (a warm-up step of the same shapes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from peers import hf_random_model, synchronize  # bench/peers.py (scripts run with bench/ on sys.path)
from rooflines import spec_roofline

from medr3_jax.models.config import preset
from medr3_jax.models.loading import load_model
from medr3_jax.progress import waiting
from medr3_jax.trainer.step import OptimizerConfig, PolicyTrainer, TrainBatch, UpdateConfig


def peak_flops() -> float:
    dtype = jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
    a = jax.random.normal(jax.random.key(0), (4096, 4096), dtype)  # not ones: constant data runs faster
    mm = jax.jit(lambda x: x @ x)
    mm(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(5):
        out = mm(a)
    out.block_until_ready()
    return 5 * 2 * 4096**3 / (time.perf_counter() - start)


def _batch(vocab: int, rows: int, width: int) -> TrainBatch:
    rng = np.random.default_rng(0)
    tokens = rng.integers(100, vocab - 1, (rows, width)).astype(np.int32)
    loss_mask = np.zeros((rows, width), bool)
    loss_mask[:, width // 2 :] = True  # the second half is "sampled"
    return TrainBatch(
        tokens=tokens, positions=np.tile(np.arange(width, dtype=np.int32), (rows, 1)), mask=np.ones((rows, width), bool),
        loss_mask=loss_mask, old_logprobs=np.full((rows, width), -5.0, np.float32),
        advantages=rng.standard_normal(rows).astype(np.float32),
    )  # fmt: skip


def ours(model, batch: TrainBatch, repeats: int, chunk: int) -> float:
    policy = PolicyTrainer(
        model, OptimizerConfig(), UpdateConfig(micro_batch=batch.tokens.shape[0], logits_chunk=chunk)
    )
    policy.update(batch)  # compile
    start = time.perf_counter()
    for _ in range(repeats):
        policy.update(batch)
    jax.block_until_ready(policy.params)
    return (time.perf_counter() - start) / repeats


def smollm2_torch():
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    from medr3_jax import assets  # noqa: PLC0415

    folder, name = os.path.split(assets.smollm2_gguf())
    return transformers.LlamaForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)


def torch_step(model, batch: TrainBatch, repeats: int, autocast: str | None = None) -> float:
    """Seconds per AdamW step of the PPO surrogate; `autocast` = the forward's dtype under
    torch.autocast (the weights keep theirs)."""
    import contextlib  # noqa: PLC0415

    import torch  # noqa: PLC0415

    torch.set_num_threads(os.cpu_count() or 1)
    model.train()
    cast = torch.autocast(model.device.type, getattr(torch, autocast)) if autocast else contextlib.nullcontext()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.01)
    tokens = torch.from_numpy(batch.tokens.astype(np.int64)).to(model.device)
    mask = torch.from_numpy(batch.loss_mask[:, 1:]).to(model.device)
    adv = torch.from_numpy(batch.advantages)[:, None].to(model.device)

    def step():
        with cast:
            logits = model(tokens).logits[:, :-1].float()
        logp = torch.log_softmax(logits, -1).gather(-1, tokens[:, 1:, None])[..., 0]
        loss = -(adv * torch.exp(logp - logp.detach()) * mask).sum() / mask.sum()  # the PPO surrogate at ratio 1
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step()
    synchronize(model)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    synchronize(model)
    return (time.perf_counter() - start) / repeats


def rl_phases(steps: int) -> dict:
    """Per-phase seconds of `steps` full RL steps of the bundled demo (gin/base.gin defaults)."""
    from medr3_jax.trainer.experiment import Experiment  # noqa: PLC0415
    from medr3_jax.trainer.loop import run_stage  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as workdir:
        run_stage(Experiment(num_steps=steps + 1), workdir)  # step 0 compiles
        with open(os.path.join(workdir, "stage3", "tb", "metrics.jsonl"), encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh][1:]
    keys = ("perf/rollout_s", "retrieval/s", "perf/reward_s", "perf/update_s", "perf/step_seconds", "perf/train_tokens",
            "rollout/idle_share", "retrieval/wait_share", "rollout/searches_per_row")  # fmt: skip
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}


def our_model(preset: str | None):
    """(our model, label): a preset with random weights in the backend's dtype, or SmolLM2 f32."""
    if preset:
        dtype = "float32" if jax.default_backend() == "cpu" else "bfloat16"
        model, _ = load_model(f"random:{preset}", param_dtype=dtype, compute_dtype=dtype)
        return model, f"{preset} (random, {dtype})"
    return load_model("smollm2_135m_instruct")[0], "SmolLM2-135M-Instruct (f32)"


def peer_seconds(args: argparse.Namespace) -> tuple[float, str]:
    """(seconds per transformers step, its precision) for the same model shapes and batch."""
    import torch  # noqa: PLC0415

    config = preset(args.preset or "smollm2_135m_instruct")  # shapes only: no weights loaded here
    if not args.preset:
        return torch_step(smollm2_torch(), _batch(config.vocab_size, args.rows, args.width), args.repeats), "float32"
    autocast = "bfloat16" if torch.cuda.is_available() else None
    model = hf_random_model(config, "float32")
    seconds = torch_step(model, _batch(config.vocab_size, args.rows, args.width), args.repeats, autocast)
    return seconds, "float32 weights, bfloat16 autocast" if autocast else "float32"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rl_steps", type=int, default=2, help="full RL steps for the phase breakdown (0: skip)")
    parser.add_argument("--preset", default=None, help="a model preset with random weights instead of SmolLM2")
    parser.add_argument(
        "--logits_chunk",
        type=int,
        default=UpdateConfig().logits_chunk,
        help="UpdateConfig.logits_chunk of our step (0: whole-width logits)",
    )
    parser.add_argument("--no_peer", action="store_true", help="time our step only (no transformers step)")
    parser.add_argument("--peer_only", action="store_true", help="(internal) time the transformers side, print s")
    args = parser.parse_args()
    if args.peer_only:
        print(json.dumps(peer_seconds(args)))
        return
    t_torch = peer_label = None
    if not args.no_peer:  # the peer first, in its own process: it returns the device memory when it exits
        with waiting("bench/train_step.py: the transformers step (its own process)"):
            peer = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--peer_only"], check=True, text=True,
                                  stdout=subprocess.PIPE)  # fmt: skip
        t_torch, peer_label = json.loads(peer.stdout.strip().splitlines()[-1])
    model, label = our_model(args.preset)
    config = model.config
    batch = _batch(config.vocab_size, args.rows, args.width)
    peak = peak_flops()
    tokens = args.rows * args.width
    flops = 6 * config.num_params * tokens
    with waiting(f"bench/train_step.py: our step ({label}, {args.rows} x {args.width})"):
        t_ours = ours(model, batch, args.repeats, args.logits_chunk)
    out = {
        "device": jax.devices()[0].device_kind, "platform": platform.platform(), "cpus": os.cpu_count(),
        "model": label, "batch": [args.rows, args.width], "peak_matmul_tflop_s": peak / 1e12,
        "ours": {"step_s": t_ours, "tokens_s": tokens / t_ours, "mfu": flops / t_ours / peak,
                 "master_dtype": OptimizerConfig().master_dtype, "logits_chunk": args.logits_chunk},
    }  # fmt: skip
    if t_torch is not None:
        out["transformers_torch"] = {"step_s": t_torch, "tokens_s": tokens / t_torch, "mfu": flops / t_torch / peak,
                                     "precision": peer_label}  # fmt: skip
        out["speedup_vs_torch"] = t_torch / t_ours
    spec = spec_roofline(jax.devices()[0].device_kind)
    if spec is not None:  # MFU against the data sheet's dense bf16 peak, beside the measured one
        out["roofline_spec"] = spec
        peak_spec = spec["matmul_tflop_s"] * 1e12
        out["ours"]["mfu_spec"] = flops / t_ours / peak_spec
        if t_torch is not None:
            out["transformers_torch"]["mfu_spec"] = flops / t_torch / peak_spec
    if args.rl_steps:
        with waiting(f"bench/train_step.py: {args.rl_steps + 1} demo RL steps"):
            out["rl_step_phases_s"] = rl_phases(args.rl_steps)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
