"""rewards.judge: reply parsing by hand-written cases, HTTPJudge against a stub server on
127.0.0.1 (success, timeouts, garbage, HTTP 500 then success, the concurrency bound, the API
key kept secret), and LocalJudge with a scripted policy."""

import collections
import dataclasses
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from medr3_jax.data.records import QARecord
from medr3_jax.rewards.judge import (
    HTTPJudge,
    JudgeStats,
    LocalJudge,
    extract_triples,
    first_json_object,
    grade_prompt,
    judge_grades,
    parse_grade,
    parse_triples,
)
from tests.sampling.fakes import EOS, ScriptedLM, byte_tokenizer

MC = QARecord(id="7", dataset="medqa", question="Which organ makes insulin?",
              options={"A": "Liver", "B": "Pancreas", "C": "Spleen"}, answer="B", answer_text="Pancreas")  # fmt: skip
OPEN = QARecord(id="9", dataset="rarearena", question="Ataxia, low vitamin E.", answer_text="AVED")
SECRET = "sk-test-secret-0123456789"


# ---- parsing --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "reply, grade",
    [
        ('{"grade": 0}', 0),
        ('```json\n{"grade": 1}\n```', 1),
        ('The answer hedges between B and C.\n{"grade": 1, "why": "hedged"} Hope this helps.', 1),
        ('{not json} then {"grade": 2}', 2),  # the first object that parses
        ('{"grade": "1"}', None),  # a string, not an int
        ('{"grade": 1.0}', None),
        ('{"grade": true}', None),
        ('{"grade": 3}', None),
        ('{"grade": -1}', None),
        ('{"note": "x"} {"grade": 1}', None),  # the first object has no grade
        ("grade: 0", None),
        ("", None),
    ],
)
def test_parse_grade(reply, grade):
    assert parse_grade(reply) == grade


def test_first_json_object_skips_arrays_and_fences():
    assert first_json_object('[1, 2] ```json\n{"a": {"b": 1}}\n```') == {"a": {"b": 1}}
    assert first_json_object("no braces") is None


def test_parse_triples():
    reply = 'Sure:\n```json\n{"triples": [["Insulin", " lowers ", "glucose"], ["a", "b"], ["x", 1, "y"], ["", "r", "t"]]}\n```'
    assert parse_triples(reply) == ([("Insulin", "lowers", "glucose")], 3)
    assert parse_triples('{"triples": []}') == ([], 0)
    assert parse_triples('{"triples": "insulin lowers glucose"}') is None
    assert parse_triples("insulin lowers glucose") is None


def test_grade_prompt_names_gold_wrong_options_and_answer():
    prompt = grade_prompt(MC, "B. Pancreas, maybe the liver")
    assert "Correct answer: Pancreas" in prompt and "Wrong answer options: Liver; Spleen" in prompt
    assert "B. Pancreas, maybe the liver" in prompt and '{"grade": 0}' in prompt
    assert "(none: open-ended question)" in grade_prompt(OPEN, "AVED")


class _ListJudge:
    def __init__(self, replies):
        self.replies = replies
        self.stats = JudgeStats()

    def complete(self, prompts):
        assert len(prompts) == len(self.replies)
        return list(self.replies)


def test_judge_grades_and_extract_triples_count_bad_replies():
    judge = _ListJudge(['{"grade": 0}', None, "no idea", '{"grade": 5}'])
    assert judge_grades(judge, [(MC, "B")] * 4) == [0, None, None, None]
    assert judge.stats.bad_replies == 2  # the failed request (None) is not a bad reply

    judge = _ListJudge(['{"triples": [["a", "r", "b"], ["bad"]]}', None, "prose"])
    stats = JudgeStats()
    assert extract_triples(judge, ["t1", "t2", "t3"], stats) == [[("a", "r", "b")], None, None]
    assert (stats.bad_replies, stats.bad_triples, judge.stats.bad_replies) == (1, 1, 0)


def test_stats_as_metrics():
    metrics = JudgeStats(requests=3, ok=2, failed=1).as_metrics()
    assert metrics["judge/requests"] == 3.0 and metrics["judge/failed"] == 1.0
    assert set(JudgeStats().as_metrics("x/")) >= {"x/timeouts", "x/http_errors", "x/bad_replies", "x/retries"}


# ---- HTTP judge against a stub server -----------------------------------------------------
@dataclasses.dataclass
class _Stub:
    """Answers by markers in the prompt; records attempts, auth headers and peak concurrency."""

    url: str = ""
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    active: int = 0
    peak: int = 0
    attempts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    auth: list = dataclasses.field(default_factory=list)
    bodies: list = dataclasses.field(default_factory=list)

    def respond(self, prompt: str, attempt: int, auth: str | None) -> tuple[int, bytes, float]:
        """(status, body, delay in seconds)."""
        if "[leak]" in prompt:  # a misbehaving proxy that echoes the request headers
            return 200, f"bad gateway: Authorization: {auth}".encode(), 0.0
        if "[garbage]" in prompt:
            return 200, b"<html>proxy error</html>", 0.0
        if "[nochoices]" in prompt:
            return 200, b'{"error": {"message": "overloaded"}}', 0.0
        if "[down]" in prompt or ("[flaky]" in prompt and attempt == 1):
            return 500, b'{"error": "internal"}', 0.0
        content = '```json\n{"grade": 0}\n```' if "Answer to grade" in prompt else f"echo: {prompt}"
        body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})
        return 200, body.encode(), 0.6 if "[slow]" in prompt else 0.05 if "[busy]" in prompt else 0.0


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        stub = self.server.stub
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = request["messages"][0]["content"]
        with stub.lock:
            stub.active += 1
            stub.peak = max(stub.peak, stub.active)
            stub.attempts[prompt] += 1
            attempt = stub.attempts[prompt]
            stub.auth.append(self.headers.get("Authorization"))
            stub.bodies.append(request)
        try:
            status, body, delay = stub.respond(prompt, attempt, self.headers.get("Authorization"))
            time.sleep(delay)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass
        finally:
            with stub.lock:
                stub.active -= 1

    def log_message(self, *args):
        pass


@pytest.fixture
def stub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.stub = _Stub(url=f"http://127.0.0.1:{server.server_address[1]}/v1")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server.stub
    server.shutdown()
    server.server_close()


def _judge(stub, **kwargs):
    defaults = dict(timeout_s=0.2, retries=2, backoff_s=0.01, api_key_env="MEDR3_TEST_JUDGE_KEY")
    return HTTPJudge(stub.url, "stub-judge", **(defaults | kwargs))


def test_http_success_grades_and_sends_the_openai_request(stub, monkeypatch):
    monkeypatch.delenv("MEDR3_TEST_JUDGE_KEY", raising=False)
    judge = _judge(stub, temperature=0.0, max_tokens=64)
    assert judge_grades(judge, [(MC, "Pancreas"), (OPEN, "AVED")]) == [0, 0]
    assert stub.bodies[0]["model"] == "stub-judge" and stub.bodies[0]["max_tokens"] == 64
    assert stub.bodies[0]["temperature"] == 0.0 and stub.bodies[0]["messages"][0]["role"] == "user"
    assert stub.auth == [None, None]  # no key in the environment: no Authorization header
    assert (judge.stats.requests, judge.stats.ok, judge.stats.failed, judge.stats.retries) == (2, 2, 0, 0)


def test_http_timeouts_are_retried_then_none(stub, caplog):
    judge = _judge(stub)
    with caplog.at_level(logging.WARNING, logger="medr3_jax.rewards.judge"):
        assert judge.complete(["[slow] a", "[slow] b", "quick"]) == [None, None, "echo: quick"]
    s = judge.stats
    assert (s.requests, s.ok, s.failed, s.timeouts, s.retries) == (3, 1, 2, 6, 4)  # 3 attempts per slow prompt
    assert stub.attempts["[slow] a"] == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 of 3 requests failed" in warnings[0].getMessage()  # one summary per batch


def test_http_garbage_and_errors(stub):
    judge = _judge(stub, retries=1)
    assert judge.complete(["[garbage]", "[nochoices]", "[down]"]) == [None, None, None]
    s = judge.stats
    assert (s.failed, s.bad_replies, s.http_errors, s.retries) == (3, 4, 2, 3)  # 2 attempts each


def test_http_500_then_success_on_retry(stub):
    judge = _judge(stub)
    assert judge_grades(judge, [(MC, "[flaky] Pancreas")]) == [0]
    s = judge.stats
    assert (s.ok, s.failed, s.http_errors, s.retries) == (1, 0, 1, 1)


def test_http_connection_refused_counts():
    with socket.socket() as sock:  # a port that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    judge = HTTPJudge(f"http://127.0.0.1:{port}/v1", "none", retries=1, backoff_s=0.0, timeout_s=0.5)
    assert judge.complete(["hi"]) == [None]
    assert (judge.stats.connection_errors, judge.stats.failed) == (2, 1)


def test_http_concurrency_bound(stub):
    judge = _judge(stub, max_concurrency=3)
    replies = judge.complete([f"[busy] {i}" for i in range(15)])
    assert replies == [f"echo: [busy] {i}" for i in range(15)]  # in prompt order
    assert 2 <= stub.peak <= 3


def test_http_api_key_in_header_only(stub, monkeypatch, caplog):
    monkeypatch.setenv("MEDR3_TEST_JUDGE_KEY", SECRET)
    with caplog.at_level(logging.DEBUG, logger="medr3_jax"):
        judge = _judge(stub, retries=1)
        assert judge.complete(["hello", "[down]", "[leak]"])[0] == "echo: hello"
    assert set(stub.auth) == {f"Bearer {SECRET}"}
    assert caplog.records  # the judge did log (init, failed attempts, the summary)
    assert SECRET not in caplog.text and SECRET not in repr(judge) and SECRET not in str(judge)


def test_http_rejects_bad_settings():
    with pytest.raises(ValueError, match="http:// or https://"):
        HTTPJudge("127.0.0.1:8000", "m")
    with pytest.raises(ValueError, match="max_concurrency >= 1"):
        HTTPJudge("http://127.0.0.1:8000", "m", max_concurrency=0)


# ---- local judge ----------------------------------------------------------------------------
def test_local_judge_grades_with_a_scripted_policy():
    template = "{% for m in messages %}<user>{{ m['content'] }}</user>{% endfor %}<bot>"
    tok = dataclasses.replace(byte_tokenizer(), chat_template=template)
    items = [(MC, "Pancreas"), (MC, "Liver"), (OPEN, "maybe AVED")]
    replies = ['{"grade": 0}', 'Wrong.\n```json\n{"grade": 2}\n```', "not sure"]
    prompts = [tok.encode(f"<user>{grade_prompt(r, a)}</user><bot>") for r, a in items]
    rows = [p + tok.encode(reply) + [EOS] for p, reply in zip(prompts, replies)]
    rows.append(rows[0])  # batch_size 4: the one batch is padded with a repeat of the first prompt
    script = np.full((4, max(map(len, rows)) + 8), ord("x"), np.int32)
    for b, row in enumerate(rows):
        script[b, : len(row)] = row
    judge = LocalJudge(ScriptedLM(script), tok, max_new_tokens=32, batch_size=4, chat=True)
    assert judge.complete([]) == []
    assert judge_grades(judge, items) == [0, 2, None]
    assert (judge.stats.requests, judge.stats.ok, judge.stats.bad_replies) == (3, 3, 1)
