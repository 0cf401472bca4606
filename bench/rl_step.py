"""The whole RL step at real shapes with retrieval on (issue 22 item 5): rollout (prefill, decode,
retrieval, append), scoring, advantages and the policy update, timed phase by phase. Prints JSON.

    python bench/rl_step.py --preset qwen2_5_1_5b --passages 1000000 --out bench/results/X.json  # one GPU
    .venv/bin/python bench/rl_step.py --preset tiny --passages 2000 --prompts 2 --group 2 \\
        --prompt_tokens 48 --max_response 160 --segment 16 --passage_tokens 8     # a CPU smoke run

The policy has random weights (`random:<preset>`, bf16 on an accelerator), so it never writes
`</search>` by itself. A schedule stands in for the policy's choices: each row gets a drawn number
of searches (0..max_searches) and drawn turn lengths, and `ScheduledSampler` caps each row's token
budget at its next event so that the compiled decode loop stops that row exactly there, as a
real `</search>` or end of text would (the row's slot idles while the others decode on); the
row is then reported as stopped at `</search>` or at its end of text. Everything else is the
project's own code at full size: the sampler's decode and chunked-prefill append into the live
cache, the rollout engine's segments and batched retrieval rounds, exact search on the device over
a synthetic `--passages`-row index written in the real on-disk format (`retrieval_scale.write_index`;
queries are real text through the bundled MiniLM query encoder), the stage-3 rule rewards (no
judge), GRPO advantages and the chunked-logits update with f32 master weights.

Reported per step (the mean over the steps after the first, which compiles): seconds of prefill,
decode, retrieval, append, the rest of the rollout's host work, scoring and update; the retrieval
share of the step (target <= 5%), the share of decode slots idle (rows done or waiting while
others decode) and of slots that rows waiting for retrieval left idle, and tokens/s of the whole
step (train tokens: prompt + sampled + documents; and sampled tokens alone).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time

import jax
import numpy as np
from flax import nnx
from machine import describe  # bench/ on sys.path, as for the other scripts
from retrieval_scale import QUERIES, write_index
from rooflines import spec_roofline

from medr3_jax import protocol as P
from medr3_jax.data.prompts import PromptStyle
from medr3_jax.data.records import QARecord
from medr3_jax.models.loading import backend_overrides, load_model
from medr3_jax.progress import waiting
from medr3_jax.retrieval.retriever import Retriever
from medr3_jax.rewards import RewardWeights
from medr3_jax.rl import group_advantages
from medr3_jax.rollout import RolloutConfig, RolloutEngine
from medr3_jax.sampling import Sampler, SamplingParams, StopReason
from medr3_jax.sharding.distributed import to_host
from medr3_jax.trainer.experiment import Experiment
from medr3_jax.trainer.loop import rollout_batch, score_rollout
from medr3_jax.trainer.step import OptimizerConfig, PolicyTrainer, UpdateConfig

MINILM_DIM = 384  # the bundled query encoder's width (the synthetic table's)


def draw_turns(rows: int, max_searches: int, sampled_room: int, seed: int) -> list[list[int]]:
    """Per row, the sampled tokens of each turn: turns[:-1] end in a search, the last in an end of
    text. Searches are uniform in 0..max_searches; a row's sampled total is uniform in
    [sampled_room / 4, sampled_room], split at uniform cut points (every turn >= 1 token)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(rows):
        turns = int(rng.integers(0, max_searches + 1)) + 1
        total = int(rng.integers(max(turns, sampled_room // 4), sampled_room + 1))
        cuts = np.sort(rng.choice(np.arange(1, total), size=turns - 1, replace=False)) if turns > 1 else []
        out.append(np.diff([0, *cuts, total]).astype(int).tolist())
    return out


class ScheduledSampler:
    """A `Sampler` whose rows stop where `turns` says: each decode call caps every row's budget at
    its next event, and a row that spent exactly that is reported as stopped at `</search>`
    (`StopReason.STOP_STRING`) or, after its last turn, at its end of text (`StopReason.EOS`).
    Times `start`, `decode` and `append` (waiting for the device) in `seconds`."""

    def __init__(self, sampler: Sampler, turns: list[list[int]]):
        self.sampler, self.turns = sampler, turns
        self.seconds: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str):  # tokenizer, stop_table, prompt_buckets, ...: the sampler's
        return getattr(self.sampler, name)

    def start(self, prompts, **kwargs):
        if len(prompts) != len(self.turns):
            raise ValueError(f"{len(prompts)} rows but a schedule for {len(self.turns)}")
        self.turn, self.in_turn = [0] * len(prompts), [0] * len(prompts)
        t0 = time.perf_counter()
        state = jax.block_until_ready(self.sampler.start(prompts, **kwargs))
        self.seconds["prefill"] += time.perf_counter() - t0
        return state

    def decode(self, state, params: SamplingParams, *, steps: int | None = None):
        real = to_host(state.budget).astype(np.int64)
        left = np.array([t[i] - n if i < len(t) else 1 << 30 for t, i, n in zip(self.turns, self.turn, self.in_turn)])
        capped = np.minimum(real, left)
        put = lambda a: self.sampler._put(np.asarray(a, np.int32))[0]  # onto the mesh as the sampler does
        t0 = time.perf_counter()
        state, out = self.sampler.decode(dataclasses.replace(state, budget=put(capped)), params, steps=steps)
        self.seconds["decode"] += time.perf_counter() - t0
        reason, stop_string = out.reason.copy(), list(out.stop_string)
        for b, n in enumerate(out.num_tokens.tolist()):
            # the cap was the schedule's (not the row's own budget) and the row spent exactly it
            hit = reason[b] == StopReason.LENGTH and left[b] < real[b] and n == left[b]
            self.in_turn[b] += n
            if not hit:
                continue
            if self.turn[b] < len(self.turns[b]) - 1:  # a search: the engine serves it and appends
                reason[b], stop_string[b] = StopReason.STOP_STRING, P.SEARCH_CLOSE
            else:
                reason[b] = StopReason.EOS
            self.turn[b] += 1
            self.in_turn[b] = 0
        state = dataclasses.replace(state, budget=put(real - out.num_tokens), reason=put(reason))
        return state, dataclasses.replace(out, reason=reason, stop_string=stop_string)

    def append(self, state, rows, tokens, **kwargs):
        t0 = time.perf_counter()
        state = jax.block_until_ready(self.sampler.append(state, rows, tokens, **kwargs))
        self.seconds["append"] += time.perf_counter() - t0
        return state


class ScheduledEngine(RolloutEngine):
    """The rollout engine, with each scheduled `</search>` given a query (the random policy's text
    does not hold one): real medical phrases, varied per row and turn so the encoder sees
    different strings."""

    def _stopped(self, row, reason: int, stop: str | None) -> str | None:
        if stop == P.SEARCH_CLOSE and self.config.retrieval and len(row.queries) < self.config.max_searches:
            return f"{QUERIES[(len(row.queries) + len(row.response)) % len(QUERIES)]} {len(row.response)}"
        return super()._stopped(row, reason, stop)


def bench_records(n: int) -> list[QARecord]:
    return [QARecord(id=f"q{i}", dataset="medqa", question=f"Question {i}: which is first-line?",
                     options={"A": "Aspirin", "B": "Heparin", "C": "Warfarin", "D": "Insulin"}, answer="B",
                     answer_text="Heparin") for i in range(n)]  # fmt: skip


def bench_prompts(tokenizer, n: int, length: int) -> list[list[int]]:
    """`n` prompts of exactly `length` tokens ending in the protocol's `<think>` prefix."""
    tail = tokenizer.encode("\nAnswer with your reasoning.\n" + P.THINK_OPEN)
    filler = tokenizer.encode(" The patient presents with chest pain and dyspnea after exertion." * (length // 8 + 8))
    return [filler[i : i + length - len(tail)] + tail for i in range(n)]


def write_bench_index(index_dir: str, args: argparse.Namespace) -> dict:
    """The synthetic `--passages`-row index (MiniLM's width, `--passage_tokens` tokens a passage)."""
    with waiting(f"bench/rl_step.py: writing a {args.passages}-row index"):
        return write_index(index_dir, args.passages, MINILM_DIM, min(args.passages, 100_000), args.passage_tokens,
                           seed=0)  # fmt: skip


def run(args: argparse.Namespace) -> dict:
    index_dir = args.index_dir
    tmp = None
    written = None
    if index_dir is None or not os.path.exists(os.path.join(index_dir, "manifest.json")):
        if index_dir is None:
            tmp = tempfile.TemporaryDirectory()
            index_dir = tmp.name
        written = write_bench_index(index_dir, args)
    t0 = time.perf_counter()
    retriever = Retriever(index_dir, backend="exact")
    retriever.search(QUERIES, args.top_k)  # compile the encoder and the search
    open_s = time.perf_counter() - t0

    overrides = backend_overrides()
    model, tokenizer = load_model(f"random:{args.preset}", param_dtype=overrides["param_dtype"],
                                  compute_dtype=overrides["param_dtype"],
                                  cache_attention=overrides["cache_attention"])  # fmt: skip
    rows = args.prompts * args.group
    rollout_config = RolloutConfig(group_size=args.group, max_searches=args.max_searches, top_k=args.top_k,
                                   max_response_tokens=args.max_response, decode_segment=args.segment,
                                   sequence_bucket=args.sequence_bucket)  # fmt: skip
    exp = Experiment(rollout=rollout_config, rewards=RewardWeights(graph=0.0), prompt=PromptStyle(mode="search"),
                     references=None)  # fmt: skip
    policy = PolicyTrainer(model, OptimizerConfig(), UpdateConfig(micro_batch=args.micro_batch))
    sampler = Sampler(
        nnx.merge(policy.graphdef, policy.sampler_params()),
        tokenizer,
        stop_strings=P.MED_R3.stop_strings(retrieval=True),
        max_new_tokens=args.max_response,
        eos_ids=(),
    )  # fmt: skip  (ends of text are the schedule's: random weights would emit them at random)
    # Room for sampled text: the response cap less the largest documents block for every search.
    block = len(P.MED_R3.document_blocks(tokenizer.encode).passages([[0] * args.passage_tokens] * args.top_k))
    room = args.max_response - args.max_searches * block - 1
    if room < args.max_searches + 1:
        raise SystemExit(f"error: --max_response {args.max_response} leaves no room for text beside "
                         f"{args.max_searches} document blocks of {block} tokens")  # fmt: skip
    turns = draw_turns(rows, args.max_searches, room, seed=args.seed)
    scheduled = ScheduledSampler(sampler, turns)
    engine = ScheduledEngine(scheduled, retriever, rollout_config)
    prompts = bench_prompts(tokenizer, args.prompts, args.prompt_tokens)
    records = [r for r in bench_records(args.prompts) for _ in range(args.group)]
    params = SamplingParams(temperature=1.0)

    steps = []
    for step in range(args.steps + 1):
        scheduled.seconds.clear()
        t0 = time.perf_counter()
        with waiting(f"bench/rl_step.py: step {step} rollout" + (" (compiles)" if step == 0 else "")):
            rollout = engine.run(prompts, params=params, seed=step)
        t1 = time.perf_counter()
        scored = score_rollout(exp, P.MED_R3, rollout, records)
        advantages = group_advantages(scored.totals, rollout.group_ids, args.prompts)
        t2 = time.perf_counter()
        policy.update(rollout_batch(rollout, np.asarray(advantages)), seed=step)
        sampler.update_params(jax.block_until_ready(policy.sampler_params()))
        t3 = time.perf_counter()
        seconds = dict(scheduled.seconds)
        retrieval = float(rollout.stats["retrieval_s"])
        phases = {"prefill_s": seconds["prefill"], "decode_s": seconds["decode"], "retrieval_s": retrieval,
                  "append_s": seconds.get("append", 0.0),
                  "rollout_host_s": (t1 - t0) - seconds["prefill"] - seconds["decode"] - retrieval
                  - seconds.get("append", 0.0),
                  "score_s": t2 - t1, "update_s": t3 - t2, "step_s": t3 - t0}  # fmt: skip
        steps.append(phases | {
            "retrieval_share": retrieval / (t3 - t0),
            "idle_slot_share": float(rollout.stats["idle_share"]),
            "retrieval_wait_slot_share": float(rollout.stats["retrieval_wait_share"]),
            "decode_calls": float(rollout.stats["decode_calls"]),
            "retrieval_calls": float(rollout.stats["retrieval_calls"]),
            "searches_per_row": float(rollout.search_counts.mean()),
            "train_tokens": float(rollout.mask.sum()),
            "sampled_tokens": float(rollout.loss_mask.sum()),
            "width": int(rollout.tokens.shape[1]),
            # every row searched and sampled exactly as scheduled (the harness stopped it where it should)
            "schedule_followed": rollout.search_counts.tolist() == [len(t) - 1 for t in turns]
            and rollout.loss_mask.sum(axis=1).tolist() == [sum(t) for t in turns],
        })  # fmt: skip
        print(f"[rl_step] step {step}: {phases['step_s']:.2f} s", file=sys.stderr, flush=True)
    measured = steps[1:] or steps
    mean = {k: float(np.mean([s[k] for s in measured])) for k in measured[0] if k != "schedule_followed"}
    mean["schedule_followed"] = all(s["schedule_followed"] for s in steps)
    mean["train_tokens_s"] = mean["train_tokens"] / mean["step_s"]
    mean["sampled_tokens_s"] = mean["sampled_tokens"] / mean["step_s"]
    device = jax.devices()[0]
    result = {
        "benchmark": "rl_step", "preset": args.preset, "dtype": overrides["param_dtype"],
        "cache_attention": overrides["cache_attention"], "rows": rows, "prompts": args.prompts, "group": args.group,
        "prompt_tokens": args.prompt_tokens, "max_response": args.max_response, "segment": args.segment,
        "max_searches": args.max_searches, "top_k": args.top_k, "passage_tokens": args.passage_tokens,
        "document_block_tokens_max": block, "micro_batch": args.micro_batch,
        "scheduled_searches_per_row": float(np.mean([len(t) - 1 for t in turns])),
        "scheduled_sampled_tokens": int(sum(map(sum, turns))),
        "index": {"passages": len(retriever), "dim": MINILM_DIM, "backend": "exact", "open_and_compile_s": open_s}
        | ({"write_s": written["write_s"]} if written else {}),
        "machine": describe(jax=True), "device": {"kind": device.device_kind, "platform": platform.platform()},
        "roofline_spec": spec_roofline(device.device_kind),
        "first_step": steps[0], "mean": mean, "steps_measured": len(measured),
    }  # fmt: skip
    if tmp is not None:
        tmp.cleanup()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="qwen2_5_1_5b")
    parser.add_argument("--passages", type=int, default=1_000_000, help="rows of the synthetic index")
    parser.add_argument("--index_dir", default=None, help="reuse (or write once into) this index directory")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8, help="rows per prompt (GRPO group)")
    parser.add_argument("--prompt_tokens", type=int, default=512)
    parser.add_argument("--max_response", type=int, default=2048, help="sampled + document tokens per row")
    parser.add_argument("--segment", type=int, default=128, help="RolloutConfig.decode_segment")
    parser.add_argument("--max_searches", type=int, default=3)
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--passage_tokens", type=int, default=128, help="policy tokens per passage (at most)")
    parser.add_argument("--sequence_bucket", type=int, default=512)
    parser.add_argument("--micro_batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2, help="steps timed after the first (which compiles)")
    parser.add_argument("--seed", type=int, default=0, help="the search schedule's")
    parser.add_argument("--write_only", action="store_true", help="write the index into --index_dir and stop")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.write_only:  # (bench/gpu.sh writes it on the host while the device runs the other parts)
        if not args.index_dir:
            raise SystemExit("error: --write_only needs --index_dir")
        print(json.dumps(write_bench_index(args.index_dir, args)))
        return
    result = run(args)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
