"""ProcessShardedJudge, three emulated processes in threads with a barrier-backed all-gather:
each inner judge is asked a disjoint share, and every process gets the full reply list, equal
to one judge answering everything (failures and non-ASCII replies included)."""

import threading

import numpy as np

from medr3_jax.rewards.judge import JudgeStats
from medr3_jax.rewards.shared_judge import ProcessShardedJudge


class EchoJudge:
    """Replies with the prompt reversed plus a non-ASCII mark; prompts containing 'fail' -> None."""

    def __init__(self):
        self.asked: list[str] = []
        self.stats = JudgeStats()

    def complete(self, prompts):
        self.asked += prompts
        failed = sum("fail" in p for p in prompts)
        self.stats.requests += len(prompts)
        self.stats.failed += failed
        self.stats.ok += len(prompts) - failed
        return [None if "fail" in p else p[::-1] + " ✓ß" for p in prompts]


class ThreadGather:
    """all-gather over threads: each 'process' deposits its array; all get the stack."""

    def __init__(self, count):
        self.count, self.slots, self.barrier = count, [None] * count, threading.Barrier(count)

    def for_process(self, p):
        def gather(x):
            self.slots[p] = np.asarray(x)
            self.barrier.wait()
            out = np.stack(self.slots)
            self.barrier.wait()  # everyone has read before the next round overwrites
            return out

        return gather


def test_each_process_asks_its_share_and_all_get_every_reply():
    prompts = [f"question {i}" for i in range(10)] + ["please fail", "ok"]
    count, gather = 3, ThreadGather(3)
    inners = [EchoJudge() for _ in range(count)]
    judges = [ProcessShardedJudge(inners[p], p, count, gather.for_process(p)) for p in range(count)]
    results = [None] * count

    def run(p):
        results[p] = judges[p].complete(prompts)

    threads = [threading.Thread(target=run, args=(p,)) for p in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    want = EchoJudge().complete(prompts)
    assert all(r == want for r in results)
    assert want[10] is None and want[0].endswith("✓ß")
    asked = [inner.asked for inner in inners]
    assert sorted(sum(asked, [])) == sorted(prompts)  # every prompt asked exactly once
    assert asked[1] == [prompts[i] for i in (1, 4, 7, 10)]
    # each process's counters are its share; job_stats (every process calls it) sums them
    assert [inner.stats.requests for inner in inners] == [4, 4, 4] and inners[1].stats.failed == 1
    totals = [None] * count

    def stats(p):
        totals[p] = judges[p].job_stats()

    threads = [threading.Thread(target=stats, args=(p,)) for p in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert totals == [JudgeStats(requests=12, ok=11, failed=1)] * count


def test_one_process_is_the_inner_judge():
    inner = EchoJudge()
    judge = ProcessShardedJudge(inner, 0, 1, gather=lambda x: np.asarray(x)[None])
    assert judge.complete(["a", "fail"]) == ["a ✓ß", None] and inner.asked == ["a", "fail"]
