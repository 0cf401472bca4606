"""The multi-turn retrieval rollout: sample -> (row wrote `</search>`) retrieve -> append the
passages into that row's live KV cache -> sample on, until every row has finished.

    engine = RolloutEngine(sampler, retriever, RolloutConfig(group_size=16))
    rollout = engine.run(prompt_ids, params=SamplingParams(temperature=1.0), seed=step)
    rollout.tokens, rollout.loss_mask, rollout.logprobs      # [R, W], R = prompts x group_size

Decoding runs in segments of `decode_segment` steps; after each segment, the rows that stopped
at `</search>` are served together (one batched retriever call) and resume in the next
segment, so a searching row waits at most one segment while the others decode. Documents are
inserted by chunked prefill (`Sampler.append`), never by re-prefilling the conversation, and
count against the response-length cap. Token ids are never re-tokenised: the trajectory is
the prompt ids, the sampled ids and the pre-tokenised passage ids, with their provenance.
The protocol (`medr3_jax.protocol`, med_r3 by default) sets the stop strings the sampler must
have and the layout of the inserted blocks.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, Protocol, Sequence

import jax
import numpy as np

from medr3_jax import protocol as P
from medr3_jax.config_types import check_field_types
from medr3_jax.protocol import DOCUMENT_CLOSE, DOCUMENT_OPEN, SEARCH_CLOSE
from medr3_jax.sampling import Sampler, SamplingParams, StopReason
from medr3_jax.sampling.sampler import bucket
from medr3_jax.sharding.distributed import all_processes, gather_from_processes

log = logging.getLogger(__name__)

# token provenance codes in `Rollout.provenance`
PAD, PROMPT, SAMPLED, DOCUMENT = 0, 1, 2, 3
# the kinds of failed retrieval rounds, counted in `Rollout.stats` (metrics `retrieval/errors`, ...)
RETRIEVAL_FAULTS = ("retrieval_errors", "retrieval_timeouts", "retrieval_bad_replies")


class BadRetrieval(ValueError):
    """A retriever reply of the wrong shape (rows, ids or token lists that do not pair up)."""


class SearchTimeout(TimeoutError):
    """A search outlasted `RolloutConfig.retrieval_timeout_s` (`call_with_timeout`)."""


class RetrievalHung(RuntimeError):
    """A search that every process entered together outlasted its timeout: it cannot be abandoned
    by one process without the hosts' collectives falling out of step, so the run stops."""


def call_with_timeout(fn, timeout_s: float):
    """fn() on a daemon thread; TimeoutError when it has not returned after `timeout_s`. The
    thread of a call that hangs is left behind (daemon: it blocks neither the next call nor the
    process's exit), unlike a pool's worker, which would queue every later search behind it."""
    box: dict = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # noqa: BLE001 -- handed to the caller
            box["error"] = err
        finally:
            done.set()

    threading.Thread(target=target, name="retrieval", daemon=True).start()
    if not done.wait(timeout_s):
        raise SearchTimeout(f"no reply within RolloutConfig.retrieval_timeout_s={timeout_s}")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _fault_kind(err: BaseException) -> str:
    """The stats key a failed search is counted under."""
    if isinstance(err, TimeoutError):
        return "retrieval_timeouts"
    return "retrieval_bad_replies" if isinstance(err, BadRetrieval) else "retrieval_errors"


def _attempt(fn, timeout_s: float) -> tuple[Any, str | None, str | None]:
    """fn() under `call_with_timeout`: (its value, None, None), or (None, the fault's kind, a
    message) when it raised or outlasted `timeout_s`."""
    try:
        return call_with_timeout(fn, timeout_s), None, None
    except Exception as err:  # noqa: BLE001 -- any retriever failure becomes the documented notice
        return None, _fault_kind(err), f"{type(err).__name__}: {err}"


class Retrieval(Protocol):
    """What the engine needs from a retriever (`retrieval.Retriever` has it, for every backend)."""

    def search(self, queries: Sequence[str], k: int) -> tuple[list[list[str]], np.ndarray]: ...

    def passage_tokens(self, passage_ids: Sequence[str]) -> list[list[int]]: ...


class SharedRetrieval(Retrieval, Protocol):
    """A retriever whose search is one program over every process (`collective` True): the engine
    calls `prepare` (this process alone: may fail on its own) and then, once every process has
    prepared, `rank` (all processes together); `search(q, k)` is `rank(prepare(q), k)`."""

    collective: bool

    def prepare(self, queries: Sequence[str]) -> Any: ...

    def rank(self, prepared: Any, k: int) -> tuple[list[list[str]], np.ndarray]: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class RolloutConfig:
    """group_size: G samples per prompt (GRPO's group). max_searches: searches per row.
    top_k: passages per search. max_response_tokens: cap on sampled + inserted tokens.
    retrieval: off for stage 1 (the sampler then needs no stop strings and rows run to their
    end of text; a sampler that does stop on `</search>` gets the row flagged). decode_segment: decode
    steps between retrieval rounds. retrieval_timeout_s: a slower search gets the failure
    notice. sequence_bucket: output width rounds up to a multiple of this (few compiles)."""

    group_size: int = 16
    max_searches: int = 4
    top_k: int = 5
    max_response_tokens: int = 2048
    retrieval: bool = True
    decode_segment: int = 128
    retrieval_timeout_s: float = 30.0
    sequence_bucket: int = 256

    def __post_init__(self) -> None:
        check_field_types(self)
        for name in ("group_size", "top_k", "max_response_tokens", "decode_segment", "sequence_bucket"):
            if getattr(self, name) < 1:
                raise ValueError(f"RolloutConfig.{name}={getattr(self, name)}: must be >= 1")
        if self.max_searches < 0 or self.retrieval_timeout_s <= 0:
            raise ValueError("RolloutConfig.max_searches must be >= 0 and retrieval_timeout_s > 0")


@dataclasses.dataclass(frozen=True)
class Rollout:
    """R trajectories as arrays, prompt then response, right-padded to W.

    tokens, positions [R,W] int32; mask [R,W] real tokens; loss_mask [R,W] tokens the policy
    sampled (prompt, documents, padding are 0); logprobs [R,W] f32 sampler log-probs of
    sampled tokens (0 elsewhere); provenance [R,W] PAD/PROMPT/SAMPLED/DOCUMENT.
    Per row: group_ids, prompt_lengths, response_lengths, search_counts, stop_reasons
    (StopReason), flags, queries, retrieved_ids, texts (the decoded response), prefixes (the
    assistant text the prompt already holds, `protocol.assistant_prefix`: usually "<think>";
    the rewards read prefix + text). stats: metrics.
    """

    tokens: np.ndarray
    positions: np.ndarray
    mask: np.ndarray
    loss_mask: np.ndarray
    logprobs: np.ndarray
    provenance: np.ndarray
    group_ids: np.ndarray
    prompt_lengths: np.ndarray
    response_lengths: np.ndarray
    search_counts: np.ndarray
    stop_reasons: np.ndarray
    flags: list[frozenset[str]]
    queries: list[list[str]]
    retrieved_ids: list[list[str]]
    texts: list[str]
    prefixes: list[str]
    stats: dict[str, float]

    @property
    def num_rows(self) -> int:
        return self.tokens.shape[0]

    @property
    def assistant_texts(self) -> list[str]:
        """Each row's whole assistant text, prefix + response: what the rewards read."""
        return [prefix + text for prefix, text in zip(self.prefixes, self.texts, strict=True)]

    def metrics(self) -> dict[str, float]:
        """The rollout's scalars for TensorBoard: `rollout/*` (the engine's stats, mean response
        tokens, the share of rows with each flag) and `retrieval/*` (the search service's)."""
        out = {f"rollout/{k}": float(v) for k, v in self.stats.items() if not k.startswith("retrieval")}
        out |= {f"retrieval/{k.removeprefix('retrieval_')}": float(v) for k, v in self.stats.items()
                if k.startswith("retrieval")}  # fmt: skip
        out["rollout/response_tokens"] = float(self.response_lengths.mean())
        for flag in (P.FLAG_BAD_SEARCH, P.FLAG_WROTE_DOCUMENT, P.FLAG_SEARCH_CAP, P.FLAG_RESPONSE_CAP, P.FLAG_LENGTH):
            out[f"rollout/{flag}"] = float(np.mean([flag in f for f in self.flags]))
        return out


@dataclasses.dataclass
class _Row:
    prompt: list[int]
    prefix: str = ""  # assistant text the prompt already holds, from its last <think> (protocol.assistant_prefix)
    response: list[int] = dataclasses.field(default_factory=list)
    provenance: list[int] = dataclasses.field(default_factory=list)
    logprobs: list[float] = dataclasses.field(default_factory=list)
    turn_start: int = 0
    queries: list[str] = dataclasses.field(default_factory=list)
    retrieved: list[str] = dataclasses.field(default_factory=list)
    flags: set[str] = dataclasses.field(default_factory=set)
    reason: int = StopReason.RUNNING
    done: bool = False

    def add(self, tokens: Sequence[int], provenance: int, logprobs: Sequence[float] | None = None) -> None:
        self.response += list(tokens)
        self.provenance += [provenance] * len(tokens)
        self.logprobs += list(logprobs) if logprobs is not None else [0.0] * len(tokens)

    def finish(self, reason: int, flag: str | None = None) -> None:
        self.done, self.reason = True, int(reason)
        if flag:
            self.flags.add(flag)


class RolloutEngine:
    """Runs `RolloutConfig` rollouts of one policy (a `Sampler`) against one retriever."""

    def __init__(
        self, sampler: Sampler, retriever: Retrieval | None, config: RolloutConfig, protocol: P.Protocol = P.MED_R3
    ):
        needed = protocol.stop_strings(retrieval=config.retrieval)
        have = set(sampler.stop_table.strings) if sampler.stop_table is not None else set()
        if not set(needed) <= have:
            raise ValueError(
                f"the rollout sampler must stop on {needed}: build it with "
                f"stop_strings=protocol.stop_strings(retrieval={config.retrieval})"
            )
        if config.retrieval and retriever is None:
            raise ValueError("RolloutConfig(retrieval=True) needs a retriever")
        self.sampler, self.retriever, self.config, self.protocol = sampler, retriever, config, protocol
        self.tokenizer = sampler.tokenizer
        self.blocks = protocol.document_blocks(self.tokenizer.encode)

    # ---- the loop -----------------------------------------------------------------------
    def run(self, prompts: Sequence[Sequence[int]], *, params: SamplingParams, seed: int = 0) -> Rollout:
        cfg, start_time = self.config, time.perf_counter()
        prefixes = [self._assistant_prefix(p) for p in prompts]
        rows = [_Row(list(p), prefix) for p, prefix in zip(prompts, prefixes) for _ in range(cfg.group_size)]
        width = bucket(max(len(p) for p in prompts), self.sampler.prompt_buckets)  # the sampler's left-padded width
        state = self.sampler.start(
            [r.prompt for r in rows],
            max_new_tokens=cfg.max_response_tokens,
            cache_len=width + cfg.max_response_tokens + 1,
            seed=seed,
        )
        stats = dict.fromkeys(
            ("slots", "used", "waiting", "decode_calls", "retrieval_calls", "retrieval_failures", "retrieval_s")
            + RETRIEVAL_FAULTS,
            0.0,
        )
        running = True
        while running:
            state, out = self.sampler.decode(state, params, steps=cfg.decode_segment)
            steps_run = int(out.num_tokens.max(initial=0))
            stats["decode_calls"] += 1
            stats["slots"] += len(rows) * steps_run
            stats["used"] += int(out.num_tokens.sum())
            searching: list[tuple[int, str]] = []
            for b, row in enumerate(rows):
                if row.done:
                    continue
                n = int(out.num_tokens[b])
                row.add(out.tokens[b, :n].tolist(), SAMPLED, out.logprobs[b, :n].tolist())
                reason = int(out.reason[b])
                if reason == StopReason.RUNNING:
                    continue
                query = self._stopped(row, reason, out.stop_string[b])
                if query is not None:
                    searching.append((b, query))
                    stats["waiting"] += steps_run - n
            appended = self._serve(rows, searching, stats) if searching else []
            if appended:
                state = self.sampler.append(
                    state, [b for b, _ in appended], [t for _, t in appended], charge_budget=True
                )
            running = bool(appended) or bool(np.any(out.reason == StopReason.RUNNING))
        return self._assemble(rows, stats | {"seconds": time.perf_counter() - start_time})

    def _stopped(self, row: _Row, reason: int, stop: str | None) -> str | None:
        """Handles a row that stopped in this segment; returns its query when it searches."""
        if reason != StopReason.STOP_STRING:
            row.finish(reason, P.FLAG_LENGTH if reason in (StopReason.LENGTH, StopReason.CACHE_FULL) else None)
            return None
        if stop in (DOCUMENT_OPEN, DOCUMENT_CLOSE):
            row.finish(reason, P.FLAG_WROTE_DOCUMENT)
            return None
        if stop != SEARCH_CLOSE or not self.config.retrieval:
            row.finish(reason, P.FLAG_BAD_SEARCH)
            return None
        if len(row.queries) >= self.config.max_searches:
            row.finish(reason, P.FLAG_SEARCH_CAP)
            return None
        turn = self.tokenizer.decode(row.response[row.turn_start :])
        try:
            return P.parse_search_turn((row.prefix.removeprefix(P.THINK_OPEN) if row.turn_start == 0 else "") + turn)
        except P.MalformedSearch as err:
            log.debug("malformed search: %s", err)
            row.finish(reason, P.FLAG_BAD_SEARCH)
            return None

    def _assistant_prefix(self, prompt: Sequence[int], tail_tokens: int = 64) -> str:
        """`protocol.assistant_prefix` of the prompt's last tokens (usually "<think>")."""
        return P.assistant_prefix(self.tokenizer.decode(list(prompt[-tail_tokens:])))

    def _serve(self, rows: list[_Row], searching: list[tuple[int, str]], stats: dict) -> list[tuple[int, list[int]]]:
        """One batched retrieval for every searching row; returns (row, tokens to append)."""
        found = self._retrieve([q for _, q in searching], stats)
        appended = []
        for (b, query), (ids, tokens) in zip(searching, found):
            row = rows[b]
            if len(row.response) + len(tokens) >= self.config.max_response_tokens:
                row.finish(StopReason.LENGTH, P.FLAG_RESPONSE_CAP)
                continue
            if not ids:
                row.flags.add(P.FLAG_RETRIEVAL_FAILED)
            row.queries.append(query)
            row.retrieved += ids
            row.add(tokens, DOCUMENT)
            row.turn_start = len(row.response)
            appended.append((b, tokens))
        return appended

    def _retrieve(self, queries: list[str], stats: dict) -> list[tuple[list[str], list[int]]]:
        """(passage ids, block tokens) per query; a search that raises, outlasts
        `retrieval_timeout_s` or replies in the wrong shape gets the notice, counted by kind
        (`retrieval_errors`, `retrieval_timeouts`, `retrieval_bad_replies`).

        Every process runs this host side for the same rows: if the search failed on any of them,
        all insert the notice, so the hosts append the same tokens and stay in step; the fault
        counts are the job's (summed over processes, one collective)."""
        t0 = time.perf_counter()
        stats["retrieval_calls"] += 1
        if getattr(self.retriever, "collective", False):
            result, kind, error = self._search_across_processes(queries)
        else:
            result, kind, error = _attempt(lambda: self._search(queries), self.config.retrieval_timeout_s)
        mine = np.asarray([kind is not None] + [kind == k for k in RETRIEVAL_FAULTS], np.int32)
        totals = mine if jax.process_count() == 1 else gather_from_processes(mine).sum(axis=0)
        for name, n in zip(RETRIEVAL_FAULTS, totals[1:].tolist()):
            stats[name] += n
        if totals[0]:
            stats["retrieval_failures"] += len(queries)
            log.warning("retrieval failed for %d queries (%s); inserting the failure notice", len(queries),
                        error or "on another process")  # fmt: skip
            result = [([], self.blocks.failed()) for _ in queries]
        stats["retrieval_s"] += time.perf_counter() - t0
        return result

    def _search(self, queries: list[str]) -> list[tuple[list[str], list[int]]]:
        """The retriever's reply, checked (`_checked`)."""
        ids, _ = self.retriever.search(queries, self.config.top_k)
        return self._checked(queries, ids)

    def _search_across_processes(self, queries: list[str]) -> tuple[list | None, str | None, str | None]:
        """A search whose ranking is one program over every process (the exact table sharded over
        the hosts, ScaNN's merged candidates): each process first prepares its queries on its own
        (`retriever.prepare`: the encoder), and only when all of them have does any enter the
        shared ranking, so a process that fails before it never leaves the others waiting inside.
        A ranking that every process entered cannot be abandoned by one of them, so outlasting the
        timeout there stops the run (`RetrievalHung`) rather than let the hosts' collectives fall
        out of step; a fault after it (ids, passage tokens) is this process's, agreed on after."""
        timeout = self.config.retrieval_timeout_s
        prepared, kind, error = _attempt(lambda: self.retriever.prepare(queries), timeout)
        if not all_processes(kind is None):
            return None, kind, error or "on another process"
        try:
            ranked, _ = call_with_timeout(lambda: self.retriever.rank(prepared, self.config.top_k), timeout)
        except SearchTimeout as err:
            raise RetrievalHung(f"the search shared by all {jax.process_count()} processes did not finish within "
                                f"RolloutConfig.retrieval_timeout_s={timeout}; stopping (resume from the last "
                                "checkpoint)") from err  # fmt: skip
        except Exception as err:  # noqa: BLE001 -- after the shared part: this process's fault, agreed on below
            return None, _fault_kind(err), f"{type(err).__name__}: {err}"
        return _attempt(lambda: self._checked(queries, ranked), timeout)

    def _checked(self, queries: list[str], ids) -> list[tuple[list[str], list[int]]]:
        """One row of at most top_k string ids per query, and one token list per id
        (`retriever.passage_tokens`); anything else is a `BadRetrieval` (never a misaligned
        insertion)."""
        k = self.config.top_k
        ids = list(ids)
        if len(ids) != len(queries):
            raise BadRetrieval(f"{len(ids)} result rows for {len(queries)} queries")
        out = []
        for row in ids:
            row = list(row)
            if len(row) > k or not all(isinstance(i, str) for i in row):
                raise BadRetrieval(f"a result row of {len(row)} entries (top_k {k}) or not all string ids: {row[:8]!r}")
            tokens = list(self.retriever.passage_tokens(row))
            if len(tokens) != len(row):
                raise BadRetrieval(f"passage_tokens gave {len(tokens)} token lists for {len(row)} ids")
            out.append((row, self.blocks.passages(tokens)))
        return out

    def _assemble(self, rows: list[_Row], stats: dict) -> Rollout:
        cfg, n = self.config, len(rows)
        total = max(len(r.prompt) + len(r.response) for r in rows)
        width = -(-total // cfg.sequence_bucket) * cfg.sequence_bucket
        tokens = np.full((n, width), self.tokenizer.pad_id, np.int32)
        provenance = np.zeros((n, width), np.int8)
        logprobs = np.zeros((n, width), np.float32)
        for i, r in enumerate(rows):
            p, q = len(r.prompt), len(r.prompt) + len(r.response)
            tokens[i, :q] = r.prompt + r.response
            provenance[i, :p], provenance[i, p:q] = PROMPT, r.provenance
            logprobs[i, p:q] = r.logprobs
        mask = provenance != PAD
        stop_ids = set(self.tokenizer.stop_ids)
        texts = [
            self.tokenizer.decode([t for t in r.response if t not in stop_ids], skip_special_tokens=True) for r in rows
        ]
        used, slots = stats.pop("used"), stats.pop("slots")
        waiting = stats.pop("waiting")
        stats |= {
            "idle_share": 1.0 - used / slots if slots else 0.0,
            "retrieval_wait_share": waiting / slots if slots else 0.0,
            "searches_per_row": float(np.mean([len(r.queries) for r in rows])),
            "sampled_tokens": float(used),
        }
        return Rollout(
            tokens=tokens,
            positions=np.where(mask, np.cumsum(mask, axis=1) - 1, 0).astype(np.int32),
            mask=mask,
            loss_mask=provenance == SAMPLED,
            logprobs=logprobs,
            provenance=provenance,
            group_ids=np.repeat(np.arange(n // cfg.group_size), cfg.group_size).astype(np.int32),
            prompt_lengths=np.array([len(r.prompt) for r in rows], np.int32),
            response_lengths=np.array([len(r.response) for r in rows], np.int32),
            search_counts=np.array([len(r.queries) for r in rows], np.int32),
            stop_reasons=np.array([r.reason for r in rows], np.int32),
            flags=[frozenset(r.flags) for r in rows],
            queries=[r.queries for r in rows],
            retrieved_ids=[r.retrieved for r in rows],
            texts=texts,
            prefixes=[r.prefix for r in rows],
            stats=stats,
        )
