"""A judge shared by several processes: each asks only its share of the prompts and the replies
are all-gathered, so a multi-host run (every host scores the same rows) sends each request once.

    judge = ProcessShardedJudge(HTTPJudge(...))        # what run_stage does on several processes
    replies = judge.complete(prompts)                 # the same full list on every process

`gather(array) -> [P, ...]` is `sharding.gather_from_processes` by default (a collective:
every process must call `complete` with the same prompts, as the train loop's replicated host
side does). The inner judge's `stats` count this process's share only; `job_stats()` sums them
over the processes (a collective too: the train loop calls it on every process each step).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from medr3_jax.rewards.judge import Judge, JudgeStats
from medr3_jax.sharding.distributed import gather_from_processes

_FAILED = -1  # length marker of a None reply


class ProcessShardedJudge:
    """Process p asks prompts p, p + P, p + 2P, ... of every batch; replies travel as UTF-8."""

    def __init__(
        self,
        inner: Judge,
        process_index: int | None = None,
        process_count: int | None = None,
        gather: Callable[[np.ndarray], np.ndarray] = gather_from_processes,
    ):
        import jax  # noqa: PLC0415

        self.inner = inner
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        self._gather = gather

    @property
    def stats(self):
        return getattr(self.inner, "stats", None)

    def job_stats(self) -> JudgeStats | None:
        """The inner judge's counters summed over every process (None when it keeps none)."""
        stats = self.stats
        if not isinstance(stats, JudgeStats):
            return None
        names = [f.name for f in dataclasses.fields(JudgeStats)]
        mine = np.asarray([getattr(stats, n) for n in names], np.int32)
        return JudgeStats(**dict(zip(names, self._gather(mine).sum(axis=0).tolist())))

    def complete(self, prompts: Sequence[str]) -> list[str | None]:
        mine = list(range(self.process_index, len(prompts), self.process_count))
        replies = self.inner.complete([prompts[i] for i in mine]) if mine else []
        lengths = np.zeros(len(prompts), np.int32)  # this process's entries; others stay 0
        chunks = []
        for i, reply in zip(mine, replies, strict=True):
            data = b"" if reply is None else reply.encode("utf-8")
            lengths[i] = _FAILED if reply is None else len(data)
            chunks.append(data)
        payload = b"".join(chunks)
        sizes = self._gather(np.asarray([len(payload)], np.int32))[:, 0]
        buffer = np.zeros(max(int(sizes.max()), 1), np.uint8)  # never empty: one shape for the gather
        buffer[: len(payload)] = np.frombuffer(payload, np.uint8)
        all_lengths = self._gather(lengths)  # [P, N]
        all_buffers = self._gather(buffer)  # [P, max bytes]
        out: list[str | None] = [None] * len(prompts)
        for p in range(self.process_count):
            offset = 0
            for i in range(p, len(prompts), self.process_count):
                n = int(all_lengths[p, i])
                if n == _FAILED:
                    continue
                out[i] = bytes(all_buffers[p, offset : offset + n]).decode("utf-8")
                offset += n
        return out
