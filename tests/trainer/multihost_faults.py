"""One process of a rollout and a judging round whose services fail on one host only (issue 24
item 5), for `test_multihost_faults.py`. The exact retriever's table is split over every process's
device (its ranking is one program over the hosts); the policy is `random:tiny` on this process's
own device, searching on a fixed schedule (bench/rl_step.py's ScheduledSampler: every row searches
in each of the first `len(FAULTS) + 1` rounds). The retriever fails by round, each time on one
process only (FAULTS); the judge is a `ProcessShardedJudge` over an `HTTPJudge` at JUDGE_URL.
Prints one JSON line: what every host must agree on.

    python tests/trainer/multihost_faults.py INDEX_DIR JUDGE_URL TAG PORT NUM_PROCESSES PROCESS_ID
"""

import json
import sys
import time

from medr3_jax.sharding import initialize

# retrieval round -> (where it fails, how): "last" is the last process, "first" process 0 (on one
# process, the same process)
FAULTS = {1: ("last", "raise"), 2: ("first", "hang"), 3: ("last", "short_tokens")}
TIMEOUT_S = 4.0  # the engine's retrieval_timeout_s; a hang sleeps 1.5x that
JUDGED = ("ok", "500", "429", "garbage", "hang", "ok")  # how the stub server answers each prompt


class OneHostFaults:
    """The real retriever, failing in round r on the process FAULTS[r] names: `prepare` raises or
    hangs (before the ranking shared by all processes), or `passage_tokens` gives one token list
    too few (after it)."""

    def __init__(self, inner, process_index: int, process_count: int):
        self.inner, self.round = inner, 0
        self.faults = {r: how for r, (where, how) in FAULTS.items()
                       if process_index == (0 if where == "first" else process_count - 1)}  # fmt: skip

    @property
    def collective(self) -> bool:
        return self.inner.collective

    def search(self, queries, k):
        return self.rank(self.prepare(queries), k)

    def prepare(self, queries):
        self.round += 1
        fault = self.faults.get(self.round)
        if fault == "raise":
            raise RuntimeError(f"injected: the query encoder failed in round {self.round}")
        if fault == "hang":
            time.sleep(1.5 * TIMEOUT_S)
        return self.inner.prepare(queries)

    def rank(self, prepared, k):
        return self.inner.rank(prepared, k)

    def passage_tokens(self, ids):
        tokens = self.inner.passage_tokens(ids)
        return tokens[:-1] if self.faults.get(self.round) == "short_tokens" else tokens


def main(index_dir: str, judge_url: str, tag: str, port: str, num_processes: str, process_id: str) -> None:
    if int(num_processes) > 1:
        initialize(f"127.0.0.1:{port}", num_processes=int(num_processes), process_id=int(process_id))
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from bench.rl_step import ScheduledEngine, ScheduledSampler  # noqa: PLC0415
    from medr3_jax import protocol as P  # noqa: PLC0415
    from medr3_jax.models.loading import load_model  # noqa: PLC0415
    from medr3_jax.retrieval.retriever import Retriever  # noqa: PLC0415
    from medr3_jax.rewards.judge import HTTPJudge  # noqa: PLC0415
    from medr3_jax.rewards.shared_judge import ProcessShardedJudge  # noqa: PLC0415
    from medr3_jax.rollout import RolloutConfig  # noqa: PLC0415
    from medr3_jax.sampling import Sampler, SamplingParams  # noqa: PLC0415
    from medr3_jax.sharding import make_mesh  # noqa: PLC0415

    rounds = len(FAULTS) + 1
    prompts_text = ["Which drug first? <think>", "What causes it? <think>"]
    retriever = Retriever(index_dir, backend="exact", mesh=make_mesh("data=-1"))
    retriever.search(["warm up"] * 4, 2)  # compiles the encoder and the ranking outside the timeouts
    faulty = OneHostFaults(retriever, jax.process_index(), jax.process_count())
    model, tokenizer = load_model("random:tiny")
    sampler = Sampler(model, tokenizer, stop_strings=P.MED_R3.stop_strings(retrieval=True), max_new_tokens=1024,
                      eos_ids=())  # fmt: skip
    turns = [[5 + b, 4, 6, 3, 5 + b] for b in range(4)]  # 2 prompts x 2 rows; a search after each turn but the last
    config = RolloutConfig(group_size=2, max_searches=rounds, top_k=2, max_response_tokens=1024, decode_segment=8,
                           retrieval_timeout_s=TIMEOUT_S, sequence_bucket=64)  # fmt: skip
    engine = ScheduledEngine(ScheduledSampler(sampler, turns), faulty, config)
    rollout = engine.run([tokenizer.encode(p) for p in prompts_text], params=SamplingParams(temperature=1.0), seed=7)

    judge = ProcessShardedJudge(HTTPJudge(judge_url, "faulty", timeout_s=1.0, retries=1, backoff_s=0.0))
    replies = judge.complete([f"{tag} {i} {how}" for i, how in enumerate(JUDGED)])
    out = {
        "process": jax.process_index(),
        "devices": jax.device_count(),
        "tokens": np.asarray(rollout.tokens).tolist(),
        "provenance": np.asarray(rollout.provenance).tolist(),
        "search_counts": np.asarray(rollout.search_counts).tolist(),
        "retrieved_ids": rollout.retrieved_ids,
        "flags": [sorted(f) for f in rollout.flags],
        "retrieval": {k: v for k, v in rollout.metrics().items() if k.startswith("retrieval/") and k != "retrieval/s"},
        "judge_replies": replies,
        "judge": judge.job_stats().as_metrics(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
