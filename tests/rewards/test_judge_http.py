"""HTTPJudge's transport (httpx) against a scripted OpenAI-compatible stub on 127.0.0.1 that
speaks HTTP/1.1 with keep-alive: which statuses are retried (5xx, 408, 429) and which are not
(400, 401, 404), Retry-After honoured and capped, read timeouts, unreadable bodies, one kept
connection for sequential requests, a pool no wider than max_concurrency, and close()."""

import dataclasses
import datetime
import gc
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from medr3_jax.rewards.judge import HTTPJudge, JudgeStats, retry_after_s

KEY_ENV = "MEDR3_TEST_JUDGE_HTTP_KEY"
SECRET = "sk-test-secret-9876543210"


@dataclasses.dataclass(frozen=True)
class Reply:
    """One scripted answer; body None is a chat completion echoing the prompt."""

    status: int = 200
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0
    hang: bool = False  # hold the request until the test releases the server


@dataclasses.dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    t: float  # time.monotonic() when its body was read
    port: int  # the client's port: one per TCP connection
    prompt: str
    auth: str | None


@dataclasses.dataclass
class Stub:
    """Per-prompt scripts (a prompt's replies are used in order, then 200s), what was received,
    connections opened and closed, and the peak of requests in flight."""

    url: str = ""
    script: dict[str, list[Reply]] = dataclasses.field(default_factory=dict)
    seen: list[Seen] = dataclasses.field(default_factory=list)
    opened: int = 0
    closed: int = 0
    active: int = 0
    peak: int = 0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    release: threading.Event = dataclasses.field(default_factory=threading.Event)

    def of(self, prompt: str) -> list[Seen]:
        return [s for s in self.seen if s.prompt == prompt]

    def wait_closed(self, n: int, within_s: float = 3.0) -> bool:
        """True once the server has seen `n` connections end."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.closed >= n:
                return True
            time.sleep(0.01)
        return False


def completion(content: str) -> bytes:
    return json.dumps({
        "id": "cmpl-1", "object": "chat.completion", "model": "stub-judge",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }).encode()  # fmt: skip


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: several requests per connection

    def setup(self):
        super().setup()
        with self.server.stub.lock:
            self.server.stub.opened += 1

    def finish(self):
        try:
            super().finish()
        finally:
            with self.server.stub.lock:
                self.server.stub.closed += 1

    def do_POST(self):
        stub: Stub = self.server.stub
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = request["messages"][0]["content"]
        with stub.lock:
            stub.seen.append(Seen(time.monotonic(), self.client_address[1], prompt, self.headers.get("Authorization")))
            queue = stub.script.get(prompt, [])
            reply = queue.pop(0) if queue else Reply()
            stub.active += 1
            stub.peak = max(stub.peak, stub.active)
        try:
            if reply.hang:
                stub.release.wait(10.0)
            time.sleep(reply.delay_s)
            body = completion(f"echo: {prompt}") if reply.body is None else reply.body
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (timeout) and closed the connection
            self.close_connection = True
        finally:
            with stub.lock:
                stub.active -= 1

    def log_message(self, *args):
        pass


@pytest.fixture
def stub(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.stub = Stub(url=f"http://127.0.0.1:{server.server_address[1]}/v1")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server.stub
    server.stub.release.set()  # no handler left waiting
    server.shutdown()
    server.server_close()


def make_judge(stub: Stub, **kwargs) -> HTTPJudge:
    defaults = {"timeout_s": 2.0, "retries": 2, "backoff_s": 0.01, "api_key_env": KEY_ENV}
    return HTTPJudge(stub.url, "stub-judge", **(defaults | kwargs))


def counts(stats: JudgeStats, *names: str) -> tuple[int, ...]:
    return tuple(getattr(stats, n) for n in names)


FIELDS = ("requests", "ok", "failed", "http_errors", "rate_limited", "client_errors", "retries")


# ---- Retry-After --------------------------------------------------------------------------------
def test_retry_after_reads_seconds_and_http_dates():
    now = datetime.datetime(2015, 10, 21, 7, 27, 0, tzinfo=datetime.UTC).timestamp()
    assert retry_after_s("1") == 1.0 and retry_after_s(" 120 ") == 120.0 and retry_after_s("0") == 0.0
    assert retry_after_s("1.5") == 1.5  # lenient: a fraction is still a wait
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 60.0
    assert retry_after_s("Wed, 21 Oct 2015 07:26:00 GMT", now=now) == 0.0  # already past
    for unreadable in (None, "", "soon", "-3", "nan", "inf", "Wed, 99 Foo 2015"):
        assert retry_after_s(unreadable, now=now) is None, unreadable


def test_429_waits_what_retry_after_asks_then_succeeds(stub):
    stub.script["p"] = [Reply(429, b'{"error": "slow down"}', (("Retry-After", "1"),))]
    with make_judge(stub) as judge:
        assert judge.complete(["p"]) == ["echo: p"]
    first, second = stub.of("p")
    assert 0.95 <= second.t - first.t < 1.8  # the server's 1 s, not our 0.01 s backoff
    assert counts(judge.stats, *FIELDS) == (1, 1, 0, 1, 1, 0, 1)
    metrics = judge.stats.as_metrics()
    assert metrics["judge/rate_limited"] == 1.0 and metrics["judge/client_errors"] == 0.0


@pytest.mark.parametrize(
    "status, header, low, high",
    [
        (429, "3600", 0.25, 1.0),  # a huge ask: capped at max_retry_after_s (0.3 s)
        (503, "0.2", 0.18, 1.0),  # honoured on 503 too
        (503, "soon", 0.0, 0.25),  # unreadable: our backoff (0.01 s)
        (429, None, 0.0, 0.25),  # absent: our backoff
    ],
)
def test_retry_after_is_capped_and_falls_back_to_backoff(stub, status, header, low, high):
    headers = (("Retry-After", header),) if header is not None else ()
    stub.script["p"] = [Reply(status, b"{}", headers)]
    with make_judge(stub, max_retry_after_s=0.3) as judge:
        t0 = time.monotonic()
        assert judge.complete(["p"]) == ["echo: p"]
        assert time.monotonic() - t0 < 1.5
    first, second = stub.of("p")
    assert low <= second.t - first.t < high
    assert (judge.stats.ok, judge.stats.retries, judge.stats.rate_limited) == (1, 1, status == 429)


# ---- which statuses are retried -----------------------------------------------------------------
@pytest.mark.parametrize("status", [500, 502, 503, 408])
def test_5xx_and_408_are_retried(stub, status):
    stub.script["p"] = [Reply(status, b'{"error": "internal"}')]
    with make_judge(stub) as judge:
        assert judge.complete(["p"]) == ["echo: p"]
    assert len(stub.of("p")) == 2
    assert counts(judge.stats, *FIELDS) == (1, 1, 0, 1, 0, 0, 1)


def test_5xx_until_retries_run_out_is_none(stub):
    stub.script["p"] = [Reply(500)] * 5
    with make_judge(stub, retries=2) as judge:
        assert judge.complete(["p"]) == [None]
    assert len(stub.of("p")) == 3
    assert counts(judge.stats, *FIELDS) == (1, 0, 1, 3, 0, 0, 2)


@pytest.mark.parametrize(
    "status, hint", [(400, "not retried"), (401, f"${KEY_ENV}"), (404, "HTTPJudge.base_url"), (422, "not retried")]
)
def test_4xx_is_asked_once_counted_and_named(stub, monkeypatch, caplog, status, hint):
    monkeypatch.setenv(KEY_ENV, SECRET)
    stub.script["bad"] = [Reply(status, f'{{"error": "nope, you sent Bearer {SECRET}"}}'.encode())]
    with caplog.at_level(logging.DEBUG, logger="medr3_jax"), make_judge(stub, retries=3) as judge:
        assert judge.complete(["bad", "good"]) == [None, "echo: good"]
    assert len(stub.of("bad")) == 1  # exactly one attempt
    assert stub.of("bad")[0].auth == f"Bearer {SECRET}"
    assert counts(judge.stats, *FIELDS) == (2, 1, 1, 1, 0, 1, 0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "1 of 2 requests failed" in warnings[0]
    assert f"HTTP {status}" in warnings[0] and hint in warnings[0] and "client_errors 1" in warnings[0]
    assert SECRET not in caplog.text  # the body echoed the key; the message masks it


# ---- timeouts and unreadable bodies -------------------------------------------------------------
def test_a_hang_past_the_read_timeout_is_a_timeout_and_frees_the_server(stub):
    stub.script["p"] = [Reply(hang=True)]
    with make_judge(stub, timeout_s=0.3, retries=0) as judge:
        t0 = time.monotonic()
        assert judge.complete(["p"]) == [None]
        assert time.monotonic() - t0 < 1.5  # the read timeout, not the server's 10 s hang
    s = judge.stats
    assert (s.requests, s.failed, s.timeouts, s.retries, s.connection_errors, s.http_errors) == (1, 1, 1, 0, 0, 0)
    stub.release.set()
    assert stub.wait_closed(stub.opened)  # the hung handler finished and its connection ended
    assert stub.active == 0


def test_a_200_with_malformed_json_is_a_bad_reply(stub):
    stub.script["p"] = [Reply(200, b'{"choices": [{"message": '), Reply(200, b"<html>proxy</html>")]
    stub.script["q"] = [Reply(200, b'{"choices": []}')]
    with make_judge(stub, retries=1) as judge:
        assert judge.complete(["p", "q"]) == [None, "echo: q"]  # q's second attempt is the default 200
    assert len(stub.of("p")) == 2 and len(stub.of("q")) == 2
    s = judge.stats
    assert (s.requests, s.ok, s.failed, s.bad_replies, s.retries, s.http_errors) == (2, 1, 1, 3, 2, 0)


# ---- connections ----------------------------------------------------------------------------------
def test_sequential_requests_reuse_one_connection(stub):
    with make_judge(stub, max_concurrency=4) as judge:
        for i in range(4):
            assert judge.complete([f"p{i}"]) == [f"echo: p{i}"]
        assert judge.generate("last").text == "echo: last"
    assert len(stub.seen) == 5
    assert stub.opened == 1 and len({s.port for s in stub.seen}) == 1


def test_the_pool_and_the_requests_in_flight_stay_within_max_concurrency(stub):
    for i in range(8):
        stub.script[f"p{i}"] = [Reply(delay_s=0.05)]
        stub.script[f"g{i}"] = [Reply(delay_s=0.05)]
    with make_judge(stub, max_concurrency=2) as judge:
        assert judge.complete([f"p{i}" for i in range(8)]) == [f"echo: p{i}" for i in range(8)]
        threads = [threading.Thread(target=judge.generate, args=(f"g{i}",)) for i in range(8)]  # 8 callers at once
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(stub.seen) == 16 and judge.stats.ok == 16
    assert stub.peak == 2  # the semaphore bounds generate() callers too
    assert stub.opened <= 2 and len({s.port for s in stub.seen}) <= 2


def test_close_ends_the_connection_and_a_later_request_opens_one(stub):
    judge = make_judge(stub)
    with judge:
        assert judge.complete(["a"]) == ["echo: a"]
    assert stub.wait_closed(1)
    judge.close()  # idempotent
    assert judge.complete(["b"]) == ["echo: b"]
    assert stub.opened == 2
    judge.close()
    assert stub.wait_closed(2)


def test_a_judge_never_closed_closes_its_connections_when_collected(stub):
    judge = make_judge(stub)
    assert judge.complete(["a"]) == ["echo: a"]
    del judge
    gc.collect()
    assert stub.wait_closed(1)
