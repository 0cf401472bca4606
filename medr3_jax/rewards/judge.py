"""Judge LLMs for the rewards: an OpenAI-compatible HTTP endpoint or a local checkpoint, and
the two questions we ask them, in the authors' words (grade an answer 0/1/2; extract the
knowledge graph of a reasoning text).

    judge = HTTPJudge("http://127.0.0.1:8000/v1", "Qwen2.5-72B-Instruct", max_concurrency=16)
    # or: judge = LocalJudge(model, tokenizer)          (any checkpoint our loaders read)
    verdicts = judge_answers(judge, [answer_prompt(record, "Pancreas")])  # [Verdict(2.0, "...")] or [None]
    graphs = extract_graphs(judge, [graph_prompt("Insulin lowers glucose ...", reference_graphs)])
    metrics = judge.stats.as_metrics()                     # {"judge/requests": 2.0, ...}

A judge never raises for a failed request: `complete` gives None for it, the counters in
`JudgeStats` say why, and one warning per batch summarises the failures. A reply that cannot
be read gives None too; the caller then falls back (rule grade) or disables the component.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import email.utils
import json
import logging
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self

import httpx

from medr3_jax.data.records import QARecord
from medr3_jax.rewards.judge_prompts import (
    ANSWER_SYSTEM_PROMPT,
    ANSWER_USER_PROMPT,
    DIAGNOSIS_SYSTEM_PROMPT,
    DIAGNOSIS_USER_PROMPT,
    EXTRACT_GRAPH_PROMPT,
    GRAPH_USER_PROMPT,
)

if TYPE_CHECKING:
    from medr3_jax.models.tokenizers import Tokenizer
    from medr3_jax.models.transformer import Decoder

log = logging.getLogger(__name__)


class Judge(Protocol):
    """Anything that answers a batch of prompts, one reply per prompt, in order; None for a
    request that failed after retries (never an exception for a failed request)."""

    def complete(self, prompts: Sequence[str]) -> list[str | None]: ...


@dataclasses.dataclass
class JudgeStats:
    """Counters for one judge (mutable; a run keeps one and logs `as_metrics()` each step).

    requests / ok / failed: prompts asked, answered, given None (after retries, or at once for a
    client error).
    timeouts / connection_errors / http_errors (a status outside 2xx): failed attempts, by cause.
    rate_limited: the http_errors that were 429 Too Many Requests (retried, after Retry-After).
    client_errors: the http_errors that are not retried (4xx other than 408 and 429, or a redirect):
    the request itself is wrong (bad URL, model, key or body), so asking again cannot help.
    bad_replies: replies that could not be read (garbage body, or no grade/triples in it).
    bad_triples: triple entries dropped from otherwise readable replies.
    retries: attempts beyond the first.
    """

    requests: int = 0
    ok: int = 0
    failed: int = 0
    timeouts: int = 0
    connection_errors: int = 0
    http_errors: int = 0
    rate_limited: int = 0
    client_errors: int = 0
    bad_replies: int = 0
    bad_triples: int = 0
    retries: int = 0

    def as_metrics(self, prefix: str = "judge/") -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in dataclasses.asdict(self).items()}


# ---- HTTP (OpenAI-compatible) ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Completion:
    """One reply: its text (without the stop string that ended it), the server's
    `finish_reason` ("stop": end of turn or a stop string; "length": max_tokens reached) and
    its `usage.completion_tokens` (estimated as characters / 4 when the server does not say)."""

    text: str
    finish_reason: str
    tokens: int


@dataclasses.dataclass(frozen=True)
class _Outcome:
    """One prompt's fate: the reply (or None), the cause of each failed attempt (one per attempt)
    and the sub-counters those attempts also bumped ("rate_limited", "client_errors")."""

    reply: Completion | None
    errors: tuple[str, ...]  # "timeouts" | "connection_errors" | "http_errors" | "bad_replies"
    last_error: str = ""  # the last attempt's error, the key masked
    tags: tuple[str, ...] = ()


class _AttemptError(Exception):
    """A failed attempt: its counter (`kind`), whether another attempt may help (`retry`), how
    long the server asked us to wait first (`wait_s`, from Retry-After; None: our backoff) and
    the sub-counters it also bumps (`tags`)."""

    def __init__(
        self, kind: str, message: str, *, retry: bool = True, wait_s: float | None = None, tags: tuple[str, ...] = ()
    ):
        super().__init__(message)
        self.kind = kind
        self.retry = retry
        self.wait_s = wait_s
        self.tags = tags


_RETRIED_STATUS = frozenset({408, 429})  # besides every 5xx: the server may answer next time
_RETRY_AFTER_STATUS = frozenset({429, 503})  # where the server's Retry-After is honoured
_CLIENT_HINTS = {
    401: "check the key in $%(env)s",
    403: "check the key in $%(env)s",
    404: "check HTTPJudge.base_url and HTTPJudge.model",
    405: "check HTTPJudge.base_url and HTTPJudge.api",
}


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """The wait, in seconds, that a `Retry-After` header asks for: delay-seconds ("120") or an
    HTTP date ("Wed, 21 Oct 2015 07:28:00 GMT", RFC 9110 10.2.3; a past date is 0), measured
    from `now` (default: time.time()). None when absent or unreadable (negative, NaN, garbage),
    so the caller falls back to its own backoff. Not capped here."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            when = when.replace(tzinfo=datetime.UTC)
        seconds = max(when.timestamp() - (time.time() if now is None else now), 0.0)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


class HTTPJudge:
    """POSTs each prompt to an OpenAI-compatible server (vLLM, SGLang, llama.cpp, OpenAI), at most
    `max_concurrency` requests in flight: `{base_url}/chat/completions` as one user turn
    (api="chat"), or `{base_url}/completions` as raw text to continue (api="completions").

    with HTTPJudge("http://127.0.0.1:8000/v1", "judge-model", timeout_s=30, retries=2) as judge:
        replies = judge.complete(["Say hi"])      # ["hi"], or [None] after retries
        judge.generate("...<think>", stop=("</search>",))   # Completion(text, finish_reason) or None

    One `httpx.Client` per judge, opened on first use, keeps up to `max_concurrency` connections
    alive between requests and batches (no TCP/TLS handshake per prompt); `close()` (or leaving a
    `with` block) closes them, and the judge closes them itself when it is garbage collected, so a
    caller that never calls close leaks nothing; a request after close opens a fresh client.
    `connect_timeout_s` bounds opening a connection, `timeout_s` each read and write.

    The API key is read from `$api_key_env` (no Authorization header when unset) and appears in
    no log line, error message or repr. Sampling defaults are the authors' judge settings
    (temperature 0.9, top_p 0.6, 4096 tokens; `contrib/base_with_api.py`).

    Retries (`retries` of them, so at most retries + 1 attempts per prompt): timeouts, connection
    errors, status 408, 429 and 5xx, and 2xx bodies without the reply text. Before a retry it
    waits backoff_s, 2 * backoff_s, 4 * backoff_s, ..., or, on 429 and 503, what the server's
    `Retry-After` asks (seconds or an HTTP date), capped at `max_retry_after_s` so that a hostile
    or confused server cannot stall a training step. Any other status (400, 401, 403, 404, 422,
    a redirect, ...) means the request itself is wrong: it gets None at once, counted in
    `stats.client_errors`, and the batch's warning names the knob to check.
    Safe to call from several threads (the counters and the client are shared under a lock, and
    the connection pool has one connection per concurrency slot).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api: Literal["chat", "completions"] = "chat",
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        retries: int = 2,
        backoff_s: float = 0.5,
        max_retry_after_s: float = 30.0,
        temperature: float = 0.9,
        top_p: float = 0.6,
        max_tokens: int = 4096,
        stats: JudgeStats | None = None,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"HTTPJudge: base_url {base_url!r} must start with http:// or https://")
        if api not in ("chat", "completions"):
            raise ValueError(f"HTTPJudge: api={api!r}; expected 'chat' or 'completions'")
        if max_concurrency < 1 or retries < 0 or timeout_s <= 0 or backoff_s < 0:
            raise ValueError(
                f"HTTPJudge: need max_concurrency >= 1, retries >= 0, timeout_s > 0, backoff_s >= 0; got "
                f"{max_concurrency}, {retries}, {timeout_s}, {backoff_s}"
            )
        if connect_timeout_s <= 0 or not max_retry_after_s >= 0:
            raise ValueError(
                f"HTTPJudge: need connect_timeout_s > 0 and max_retry_after_s >= 0; got {connect_timeout_s}, "
                f"{max_retry_after_s}"
            )
        self.api = api
        self.url = base_url.rstrip("/") + ("/chat/completions" if api == "chat" else "/completions")
        self.model = model
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.temperature = temperature
        self.top_p = top_p
        self.max_tokens = max_tokens
        self.stats = stats if stats is not None else JudgeStats()
        self._lock = threading.Lock()  # the counters and the client slot
        self._slots = threading.BoundedSemaphore(max_concurrency)  # requests in flight, from any thread
        self._client: httpx.Client | None = None
        self._closer: weakref.finalize | None = None
        self.__key = os.environ.get(api_key_env) or None  # private: never logged, shown or raised
        log.info(
            "HTTP endpoint %s at %s (key from $%s: %s)", model, self.url, api_key_env, "set" if self.__key else "unset"
        )

    def __repr__(self) -> str:
        return f"HTTPJudge(url={self.url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the kept connections (idempotent; a later request opens a fresh client)."""
        with self._lock:
            closer, self._client, self._closer = self._closer, None, None
        if closer is not None:
            closer()  # client.close(), once

    def _http(self) -> httpx.Client:
        """The judge's client, opened on first use (one per judge, shared by its threads)."""
        with self._lock:
            if self._client is None:
                client = httpx.Client(
                    timeout=httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s),
                    limits=httpx.Limits(
                        max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
                    ),
                    follow_redirects=False,  # a redirected POST turns into a GET; name the final URL instead
                )
                self._client = client
                # Closes the pool when the judge is collected (or at exit) for callers that never call close.
                self._closer = weakref.finalize(self, client.close)
            return self._client

    def complete(self, prompts: Sequence[str]) -> list[str | None]:
        if not prompts:
            return []
        workers = min(self.max_concurrency, len(prompts))
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="judge") as pool:
            outcomes = list(pool.map(self._ask, prompts))
        self._count(outcomes)
        return [o.reply.text if o.reply else None for o in outcomes]

    def generate(self, prompt: str, *, stop: Sequence[str] = (), max_tokens: int | None = None) -> Completion | None:
        """One prompt, decoding until a `stop` string (left out of the text), the end of the turn
        or `max_tokens` (default: the instance's); None when the request failed after retries."""
        outcome = self._ask(prompt, tuple(stop), max_tokens)
        self._count([outcome])
        return outcome.reply

    def _count(self, outcomes: Sequence[_Outcome]) -> None:
        """Folds the outcomes into the stats and warns once if any failed."""
        with self._lock:
            s = self.stats
            s.requests += len(outcomes)
            for o in outcomes:
                s.ok += o.reply is not None
                s.failed += o.reply is None
                s.retries += len(o.errors) - (o.reply is None)  # a failed prompt's last error is no retry
                for kind in o.errors + o.tags:
                    setattr(s, kind, getattr(s, kind) + 1)
        failed = [o for o in outcomes if o.reply is None]
        if failed:
            kinds = {k: sum(k in o.errors + o.tags for o in failed) for k in _ERROR_KINDS}
            log.warning(
                "endpoint %s: %d of %d requests failed (%s; up to %d retries each, none for a client error); "
                "last error: %s",
                self.model,
                len(failed),
                len(outcomes),
                ", ".join(f"{k} {v}" for k, v in kinds.items() if v),
                self.retries,
                failed[-1].last_error,
            )

    def _ask(self, prompt: str, stop: tuple[str, ...] = (), max_tokens: int | None = None) -> _Outcome:
        """One prompt with retries (runs on a worker thread; touches no shared state but the client)."""
        errors: list[str] = []
        tags: list[str] = []
        message = ""
        wait_s = 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(wait_s)
            try:
                return _Outcome(self._post(prompt, stop, max_tokens), tuple(errors), tags=tuple(tags))
            except _AttemptError as err:
                errors.append(err.kind)
                tags.extend(err.tags)
                message = str(err).replace(self.__key, "***") if self.__key else str(err)  # a body may echo it
                log.debug("endpoint attempt %d failed: %s", attempt, message)
                if not err.retry:
                    break
                wait_s = err.wait_s if err.wait_s is not None else self.backoff_s * 2**attempt
        return _Outcome(None, tuple(errors), message, tuple(tags))

    def _post(self, prompt: str, stop: tuple[str, ...], max_tokens: int | None) -> Completion:
        """One attempt: the request, its status sorted into retried or not, the reply read."""
        body: dict[str, Any] = {
            "model": self.model,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": max_tokens or self.max_tokens,
        }
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        if stop:
            body["stop"] = list(stop)
        headers = {"Content-Type": "application/json"}
        if self.__key:
            headers["Authorization"] = f"Bearer {self.__key}"
        try:
            with self._slots:
                response = self._http().post(self.url, content=json.dumps(body).encode("utf-8"), headers=headers)
        except httpx.TimeoutException as err:  # connect, read, write or pool
            raise _AttemptError("timeouts", f"{type(err).__name__}: {err}") from None
        except httpx.DecodingError as err:  # a body that its Content-Encoding does not describe
            raise _AttemptError("bad_replies", f"{type(err).__name__}: {err}") from None
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as err:  # refused, reset, closed, protocol errors
            raise _AttemptError("connection_errors", f"{type(err).__name__}: {err}") from None
        status = response.status_code
        if 200 <= status < 300:
            return _reply(response.content, self.api)
        reason = f"HTTP {status} {response.reason_phrase}".rstrip()
        if status in _RETRIED_STATUS or status >= 500:
            wait_s = None
            if status in _RETRY_AFTER_STATUS:
                asked = retry_after_s(response.headers.get("Retry-After"))
                if asked is not None:
                    wait_s = min(asked, self.max_retry_after_s)
                    reason += (
                        f" (Retry-After {asked:g} s; a retry waits {wait_s:g} s, at most HTTPJudge.max_retry_after_s)"
                    )
            tags = ("rate_limited",) if status == 429 else ()
            raise _AttemptError("http_errors", reason, wait_s=wait_s, tags=tags)
        hint = _CLIENT_HINTS.get(status, "not retried: the request itself is wrong") % {"env": self.api_key_env}
        if 300 <= status < 400:
            hint = f"redirected to {response.headers.get('Location')!r}: set HTTPJudge.base_url to the final URL"
        detail = response.text[:200].strip()
        raise _AttemptError("http_errors", f"{reason} ({hint}): {detail!r}", retry=False, tags=("client_errors",))


_ERROR_KINDS = ("timeouts", "connection_errors", "http_errors", "rate_limited", "client_errors", "bad_replies")


def _reply(raw: bytes, api: str) -> Completion:
    """choices[0].message.content (chat) or choices[0].text (completions) of a reply body, with
    its finish_reason; else a bad-reply attempt error."""
    field = "choices[0].message.content" if api == "chat" else "choices[0].text"
    try:
        body = json.loads(raw.decode("utf-8"))
        choice = body["choices"][0]
        content = choice["message"]["content"] if api == "chat" else choice["text"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, IndexError, TypeError) as err:
        raise _AttemptError("bad_replies", f"unreadable body ({type(err).__name__}): {raw[:80]!r}") from None
    if not isinstance(content, str):
        raise _AttemptError("bad_replies", f"{field} is {type(content).__name__}, not text")
    usage = body.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    if not isinstance(tokens, int) or isinstance(tokens, bool):
        tokens = max(len(content) // 4, 1)
    return Completion(content, str(choice.get("finish_reason") or "stop"), tokens)


# ---- local checkpoint -----------------------------------------------------------------------
class LocalJudge:
    """Greedy replies from a local model through our Sampler, in fixed-size batches (the last
    one padded with repeats, so one compiled shape serves every batch).

    judge = LocalJudge(*load_model("smollm2_135m_instruct"), max_new_tokens=128)
    replies = judge.complete(["Say hi"])

    chat=True renders each prompt as one user turn with the tokenizer's chat template.
    A reply cut off by `max_new_tokens` is returned as it stands (and likely fails to parse).
    """

    def __init__(
        self,
        model: Decoder,
        tokenizer: Tokenizer,
        *,
        max_new_tokens: int = 256,
        batch_size: int = 8,
        chat: bool = True,
        stats: JudgeStats | None = None,
    ):
        # Imported here: rewards sit below sampling in the import order; only this judge needs it.
        from medr3_jax.sampling import Sampler  # noqa: PLC0415

        if batch_size < 1:
            raise ValueError(f"LocalJudge: batch_size must be >= 1, got {batch_size}")
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.chat = chat
        self.stats = stats if stats is not None else JudgeStats()
        self.sampler = Sampler(model, tokenizer, max_new_tokens=max_new_tokens)

    def __repr__(self) -> str:
        return f"LocalJudge(tokenizer={self.tokenizer.path!r}, batch_size={self.batch_size}, chat={self.chat})"

    def _render(self, prompt: str) -> list[int]:
        if self.chat:
            prompt = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}])
        return self.tokenizer.encode(prompt)

    def complete(self, prompts: Sequence[str]) -> list[str | None]:
        from medr3_jax.sampling import GREEDY  # noqa: PLC0415

        ids = [self._render(p) for p in prompts]
        out: list[str | None] = []
        for start in range(0, len(ids), self.batch_size):
            chunk = ids[start : start + self.batch_size]
            padded = chunk + [chunk[0]] * (self.batch_size - len(chunk))
            _, decoded = self.sampler.decode(self.sampler.start(padded), GREEDY)
            for b in range(len(chunk)):
                row = decoded.row(b)
                if row and row[-1] in self.tokenizer.stop_ids:  # end of turn, not reply text
                    row = row[:-1]
                out.append(self.tokenizer.decode(row, skip_special_tokens=True))
        self.stats.requests += len(out)
        self.stats.ok += len(out)
        return out


# ---- reply parsing --------------------------------------------------------------------------
def first_json_object(text: str) -> dict[str, Any] | None:
    """The first `{...}` in `text` that parses as a JSON object (prose and code fences around
    it are ignored); None if there is none."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


# ---- answer grading (the authors' prompts, `contrib/med_reasoning_logical.py`) --------------
def answer_prompt(record: QARecord, answer: str, question: str | None = None) -> str:
    """The authors' judge prompt for one answer: system text, a newline, the user text
    (`RewardActorMedReasoningLogical.compute_score`). `question` is the question as the policy
    saw it (default: the record's). The misleading options are the wrong option texts, written
    as their Python list; RareArena cases get the rare-disease diagnosis prompt."""
    gold = record.answer_text or record.options.get(record.answer, "")
    if record.dataset == "rarearena":
        return DIAGNOSIS_SYSTEM_PROMPT + "\n" + DIAGNOSIS_USER_PROMPT.format(answer=answer, correct_answer=gold)
    user = ANSWER_USER_PROMPT.format(
        question=record.question if question is None else question,
        answer=answer,
        correct_answer=gold,
        misleading_options=[text for text in record.options.values() if text != gold],
    )
    return ANSWER_SYSTEM_PROMPT + "\n" + user


_FENCED = "```json"
_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_ARRAY = re.compile(r"\[.*\]", re.DOTALL)


def read_json(reply: str, outer: re.Pattern[str]) -> Any:
    """The authors' `read_json` (`my_reward/api.py`): the last ```json block of the reply, else
    the outermost span `outer` matches ({...} or [...]), parsed; None when that does not parse
    (theirs then tries json_repair, which is not ours)."""
    if _FENCED in reply:
        content = reply.split(_FENCED)[-1].split("```")[0].strip()
    else:
        found = outer.search(reply)
        content = found.group() if found else ""
    try:
        return json.loads(content)
    except json.JSONDecodeError:
        return None


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A judge's reply read: its numeric score (the rubric's 0/1/2, or whatever number it
    wrote) and its reason."""

    score: float
    reason: str


def parse_verdict(reply: str) -> Verdict | None:
    """The `score` (a number, or a string holding one) and `reason` of the reply's JSON object,
    read as the authors' `read_json` reads it: the last ```json block, else the outermost
    {...}; else the first object that parses. None when there is no numeric score."""
    obj = read_json(reply, _OBJECT)
    if not isinstance(obj, dict):
        obj = first_json_object(reply)
    if obj is None or isinstance(obj.get("score"), bool):
        return None
    try:
        score = float(obj["score"])
    except (KeyError, TypeError, ValueError):
        return None
    if not math.isfinite(score):
        return None
    return Verdict(score, str(obj.get("reason", "")))


def judge_answers(
    judge: Judge,
    prompts: Sequence[str],
    *,
    attempts: int = 3,
    stats: JudgeStats | None = None,
) -> list[Verdict | None]:
    """The judge's verdict on each `answer_prompt`. A reply without a readable score is asked
    again, up to `attempts` asks in all (the authors' `api_retries`: their judge samples at
    temperature 0.9, so another ask can read); None after that or for a failed request (the
    caller falls back), counted in `stats.bad_replies`."""
    stats = _stats_of(judge, stats)
    verdicts: list[Verdict | None] = [None] * len(prompts)
    pending = list(range(len(prompts)))
    for _ in range(max(attempts, 1)):
        if not pending:
            break
        replies = judge.complete([prompts[i] for i in pending])
        still = []
        for i, reply in zip(pending, replies):
            verdict = parse_verdict(reply) if reply is not None else None
            if verdict is None and reply is not None:
                stats.bad_replies += 1
                log.debug("judge reply holds no score: %r", reply[:200])
                still.append(i)
            verdicts[i] = verdict
        pending = still
    return verdicts


# ---- reasoning graphs (the authors' extraction, `compute_score` in `contrib/med_reasoning_logical.py`)
def graph_prompt(reasoning: str, reference_graphs: Sequence[str]) -> str:
    """The authors' extraction prompt for one think text: their instructions, then the reasoning
    and the reference graphs (JSON arrays, one per line), so that the judge reuses their wording."""
    user = GRAPH_USER_PROMPT.format(reasoning_process=reasoning, reference_kgs="\n".join(reference_graphs))
    return EXTRACT_GRAPH_PROMPT + "\n" + user


def parse_graph(reply: str) -> list[list[Any]] | None:
    """The reply's knowledge graph as the authors read it (`read_json(..., default=List)`): the
    last ```json block, else the outermost [...]; its entries as lists ([head, relation, tail,
    if_retrieval], kept as written). None when that is not a JSON array of arrays."""
    value = read_json(reply, _ARRAY)
    if not isinstance(value, list) or not all(isinstance(entry, list) for entry in value):
        return None
    return value


def extract_graphs(
    judge: Judge, prompts: Sequence[str], stats: JudgeStats | None = None
) -> list[list[list[Any]] | None]:
    """The judge's graph for each `graph_prompt`; None for a failed request or an unreadable
    reply (counted in `stats.bad_replies`; `stats` defaults to the judge's own)."""
    stats = _stats_of(judge, stats)
    out: list[list[list[Any]] | None] = []
    for reply in judge.complete(list(prompts)):
        graph = parse_graph(reply) if reply is not None else None
        if reply is not None and graph is None:
            stats.bad_replies += 1
            log.debug("judge reply holds no graph: %r", reply[:200])
        out.append(graph)
    return out


def _stats_of(judge: Judge, stats: JudgeStats | None) -> JudgeStats:
    if stats is not None:
        return stats
    own = getattr(judge, "stats", None)
    return own if isinstance(own, JudgeStats) else JudgeStats()
